//! Network-level multicast on a LAN, beside the overlay tree.
//!
//! The overlay copies every group message once per tree link; IP multicast
//! lets a LAN's switches do the copying. Where a node is configured with a
//! multicast-capable interface, a group's members on that LAN can take its
//! messages from one datagram instead of one QUIC stream each, and keep
//! receiving from one another when their way to the tree is broken.
//!
//! Multicast datagrams are not protected by QUIC, so each is sealed with a
//! key of its group: the root draws a [`GroupKey`] and members receive it
//! over the TLS-protected overlay. [`datagram`] is the format and its
//! sealing (ChaCha20-Poly1305, a key per sender derived with HKDF), and
//! [`replay`] the window that turns away a datagram seen before. Islands,
//! the members of a group on one LAN that share one copy of each message,
//! are described in `island.rs` (see [`IslandView`]). The I/O, sockets and
//! interfaces, is the daemon's.

pub mod datagram;
mod island;
pub mod replay;

pub use datagram::{
    peek_mid, GroupKey, LanBody, OpenError, Opener, SealError, Sealer, HEADER_LEN, MAX_DATAGRAM,
    TAG_LEN,
};
pub(crate) use island::Lan;
pub use island::{IslandView, LanStats};
pub use replay::ReplayWindow;
