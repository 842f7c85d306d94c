//! `overlay-sim --plot DIR`: the run's distributions and one group's tree,
//! drawn into files in `DIR` (the trees at rest, before any churn).
//!
//! - `stretch.svg`: the cumulative distribution of tree stretch (relative
//!   delay penalty: delay from the root along the tree over the direct
//!   delay) over every member of every group, with the mean and the 95th
//!   percentile marked;
//! - `children.svg`: a histogram of the children of each forwarding node in
//!   each group, with the configured fan-out bound marked;
//! - `link-stress.svg`: the cumulative distribution, on a log scale, of link
//!   stress (copies of one message per group on each physical link that
//!   carries any) for the overlay's trees against IP multicast's
//!   shortest-path trees from the same roots to the same members, means
//!   marked (transit-stub model only: the Euclidean one has no links);
//! - `tree.dot` and `tree.svg`: one small group's tree (see
//!   [`TreeDrawing::pick`]), root at the top, members filled, forwarders that
//!   are not members hollow and dashed, each link labelled with its delay.
//!   `tree.svg` is Graphviz's `dot -Tsvg` of `tree.dot` if `dot` is on
//!   `PATH`, else a layered layout drawn here.
//!
//! Only plotters' SVG backend is used, without font libraries: text is
//! placed by an estimate of its size and rendered by whatever shows the SVG.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use overlay_proto::{GroupView, NodeId};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Dist, Report, Stress, Trees};

/// Size of the charts, in pixels.
const CHART: (u32, u32) = (900, 560);
/// Most steps drawn of a cumulative distribution.
const CDF_STEPS: usize = 1500;
/// The overlay's colour.
const ALM: RGBColor = RGBColor(31, 119, 180);
/// IP multicast's colour, and the marks.
const MARK: RGBColor = RGBColor(214, 39, 40);
/// A second mark.
const MARK2: RGBColor = RGBColor(255, 127, 14);
/// Tree drawing: fill of a member.
const MEMBER: RGBColor = RGBColor(70, 130, 180);
/// Tree drawing: the root's ring.
const ROOT: RGBColor = RGBColor(230, 160, 0);
/// Smallest group worth drawing.
const DRAW_MIN_MEMBERS: usize = 8;

/// One group's tree as its nodes' state says it is, for a drawing. Nodes
/// are the simulator's node indices.
#[derive(Debug, Clone, Default)]
pub struct TreeDrawing {
    /// The group's index in the run.
    pub group: usize,
    /// The group's mid.
    pub mid: String,
    /// The root.
    pub root: usize,
    /// Tree links from the root down, parents before their children, each
    /// node once as a child: (parent, child, link delay in ms).
    pub edges: Vec<(usize, usize, f64)>,
    /// Tree nodes whose application is a member.
    pub members: BTreeSet<usize>,
}

impl TreeDrawing {
    /// The group to draw, from the number of running members of each: the
    /// smallest with at least 8, else the largest (`None` without groups).
    pub fn pick(members: &[usize]) -> Option<usize> {
        let big_enough = (0..members.len())
            .filter(|&g| members[g] >= DRAW_MIN_MEMBERS)
            .min_by_key(|&g| members[g]);
        big_enough.or_else(|| (0..members.len()).max_by_key(|&g| members[g]))
    }

    /// Group `group`'s tree from its nodes' views (by node index), followed
    /// down the children lists from its root. `None` unless exactly one
    /// view says it is the root. `index_of` finds a node's index,
    /// `delay_ms` the delay between two nodes.
    pub fn from_views(
        group: usize,
        views: &HashMap<usize, GroupView>,
        index_of: impl Fn(NodeId) -> Option<usize>,
        delay_ms: impl Fn(usize, usize) -> f64,
    ) -> Option<TreeDrawing> {
        let mut roots = views.iter().filter(|(_, v)| v.root);
        let (&root, root_view) = roots.next()?;
        if roots.next().is_some() {
            return None;
        }
        let mut d = TreeDrawing {
            group,
            mid: root_view.mid.to_string(),
            root,
            ..Default::default()
        };
        let mut seen = HashSet::from([root]);
        let mut queue = VecDeque::from([root]);
        while let Some(at) = queue.pop_front() {
            let v = &views[&at];
            if v.member {
                d.members.insert(at);
            }
            for c in &v.children {
                let Some(j) = index_of(c.id) else { continue };
                if views.contains_key(&j) && seen.insert(j) {
                    d.edges.push((at, j, delay_ms(at, j)));
                    queue.push_back(j);
                }
            }
        }
        Some(d)
    }

    /// Every node on the tree, the root first.
    fn nodes(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.root).chain(self.edges.iter().map(|e| e.1))
    }

    /// The tree in Graphviz's DOT language.
    pub fn to_dot(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "digraph tree {{");
        let _ = writeln!(
            s,
            "  label=\"group {} ({}): {} tree nodes, {} members; filled: member, \
             dashed: forwarder only, double: root; links in ms\";",
            self.group,
            self.mid,
            self.edges.len() + 1,
            self.members.len()
        );
        let _ = writeln!(s, "  labelloc=t; fontname=\"sans-serif\";");
        let _ = writeln!(
            s,
            "  node [shape=circle, fontname=\"sans-serif\", fontsize=10, style=filled, \
             fillcolor=white];"
        );
        let _ = writeln!(s, "  edge [fontname=\"sans-serif\", fontsize=9];");
        for n in self.nodes() {
            let mut attrs = vec![format!("label=\"{n}\"")];
            if self.members.contains(&n) {
                attrs.push(format!("fillcolor=\"{}\", fontcolor=white", hex(MEMBER)));
            } else {
                attrs.push("style=\"filled,dashed\"".into());
            }
            if n == self.root {
                attrs.push(format!("shape=doublecircle, color=\"{}\"", hex(ROOT)));
            }
            let _ = writeln!(s, "  n{n} [{}];", attrs.join(", "));
        }
        for &(p, c, ms) in &self.edges {
            let _ = writeln!(s, "  n{p} -> n{c} [label=\"{ms:.1}\"];");
        }
        s.push_str("}\n");
        s
    }
}

/// Writes the plots of `report` into `dir`, created if missing, and
/// returns the files written. `link-stress.svg` needs link stress (the
/// transit-stub model), the tree files a tree to draw.
pub fn write_plots(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "could not create the plot directory {}: give --plot a directory you can write to",
            dir.display()
        )
    })?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: String| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| {
            format!(
                "could not write {}: check that the directory is writable",
                path.display()
            )
        })?;
        written.push(path);
        Ok(())
    };
    put(
        "stretch.svg",
        render("stretch.svg", CHART, |a| stretch(a, &report.trees))?,
    )?;
    put(
        "children.svg",
        render("children.svg", CHART, |a| children(a, &report.trees))?,
    )?;
    if let Some(st) = &report.stress {
        put(
            "link-stress.svg",
            render("link-stress.svg", CHART, |a| link_stress(a, st))?,
        )?;
    }
    if let Some(d) = &report.trees.drawing {
        let dot = dir.join("tree.dot");
        put("tree.dot", d.to_dot())?;
        let svg = dir.join("tree.svg");
        if graphviz(&dot, &svg) {
            written.push(svg);
        } else {
            put("tree.svg", tree_svg(d)?)?;
        }
    }
    Ok(written)
}

/// Runs `dot -Tsvg`; false if there is no `dot` or it failed.
fn graphviz(dot: &Path, svg: &Path) -> bool {
    match Command::new("dot")
        .arg("-Tsvg")
        .arg(dot)
        .arg("-o")
        .arg(svg)
        .output()
    {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            tracing::warn!(
                status = %out.status,
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "dot failed on {}; drawing tree.svg without Graphviz",
                dot.display()
            );
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not run dot; drawing tree.svg without Graphviz");
            false
        }
    }
}

/// The drawing area the plots draw on.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// An SVG of `size` pixels, drawn by `draw` on a white background.
fn render(
    name: &str,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut buf = String::new();
    {
        let area = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        area.fill(&WHITE)?;
        draw(&area).with_context(|| format!("could not draw {name}"))?;
        area.present()
            .with_context(|| format!("could not draw {name}"))?;
    }
    Ok(buf)
}

/// A plot without data: just says so.
fn no_data(area: &Area<'_>, what: &str) -> anyhow::Result<()> {
    let (w, h) = area.dim_in_pixel();
    let style = ("sans-serif", 20)
        .into_font()
        .into_text_style(area)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(
        what.to_string(),
        (w as i32 / 2, h as i32 / 2),
        style,
    ))?;
    Ok(())
}

/// The empirical cumulative distribution of `sorted` as a step line, at
/// most about `max_steps` steps (evenly thinned beyond that).
fn cdf(sorted: &[f64], max_steps: usize) -> Vec<(f64, f64)> {
    let n = sorted.len() as f64;
    // (value, samples <= value) at each distinct value.
    let mut steps: Vec<(f64, usize)> = Vec::new();
    for (i, &x) in sorted.iter().enumerate() {
        match steps.last_mut() {
            Some(s) if s.0 == x => s.1 = i + 1,
            _ => steps.push((x, i + 1)),
        }
    }
    let stride = steps.len().div_ceil(max_steps.max(1)).max(1);
    let mut points = Vec::with_capacity(2 * steps.len() / stride + 2);
    let mut below = 0;
    for (k, &(x, upto)) in steps.iter().enumerate() {
        if k % stride == 0 || k + 1 == steps.len() {
            points.push((x, below as f64 / n));
            points.push((x, upto as f64 / n));
            below = upto;
        }
    }
    points
}

/// A vertical dashed mark at `x` over `y`, in the legend as `label`.
fn vmark(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    x: f64,
    y: (f64, f64),
    color: RGBColor,
    label: String,
) -> anyhow::Result<()> {
    chart
        .draw_series(DashedLineSeries::new(
            vec![(x, y.0), (x, y.1)],
            6,
            4,
            color.stroke_width(2),
        ))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    Ok(())
}

/// Tree stretch over all members, as a CDF.
fn stretch(area: &Area<'_>, t: &Trees) -> anyhow::Result<()> {
    let mut v = t.stretch_samples.clone();
    let d = Dist::of(&mut v);
    if v.is_empty() {
        return no_data(area, "tree stretch: no member with a path to its root");
    }
    let lo = v[0].min(1.0);
    // A long tail would squash the body: cut the axis past p99.
    let cut = d.max > 1.5 * d.p99 && d.p99 > lo;
    let mut hi = if cut { d.p99 * 1.2 } else { d.max };
    if hi <= lo {
        hi = lo + 0.1;
    }
    let caption = format!(
        "Tree stretch (RDP), {} members: mean {:.2}, p95 {:.2}{}",
        d.n,
        d.mean,
        d.p95,
        if cut {
            format!(", max {:.1} (axis cut)", d.max)
        } else {
            String::new()
        }
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(lo..hi, 0f64..1f64)?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .x_desc("delay from the root along the tree / direct delay")
        .y_desc("share of members")
        .draw()?;
    let mut points: Vec<(f64, f64)> = cdf(&v, CDF_STEPS)
        .into_iter()
        .filter(|p| p.0 <= hi)
        .collect();
    if let (true, Some(&(_, y))) = (cut, points.last()) {
        points.push((hi, y));
    }
    chart
        .draw_series(LineSeries::new(points, ALM.stroke_width(2)))?
        .label("members (CDF)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], ALM.stroke_width(2)));
    vmark(
        &mut chart,
        d.mean,
        (0.0, 1.0),
        MARK2,
        format!("mean {:.2}", d.mean),
    )?;
    vmark(
        &mut chart,
        d.p95,
        (0.0, 1.0),
        MARK,
        format!("p95 {:.2}", d.p95),
    )?;
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// Draws the chart's legend, in the same style on every chart.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Children per forwarding node per group, as a histogram.
fn children(area: &Area<'_>, t: &Trees) -> anyhow::Result<()> {
    let counts: Vec<u32> = (t.children_samples.iter())
        .map(|&c| c.round().max(0.0) as u32)
        .collect();
    if counts.is_empty() {
        return no_data(area, "children: no node forwards to any child");
    }
    let bound = t.max_children_bound as u32;
    let top = counts.iter().copied().max().unwrap_or(0).max(bound).max(1);
    let mut bins = vec![0u32; top as usize + 1];
    for &c in &counts {
        bins[c as usize] += 1;
    }
    let highest = bins.iter().copied().max().unwrap_or(1).max(1);
    let mean = counts.iter().map(|&c| c as f64).sum::<f64>() / counts.len() as f64;
    let over = counts.iter().filter(|&&c| c > bound).count();
    let caption = format!(
        "Children per forwarding node per group: {} nodes, mean {mean:.2}, {} over the bound",
        counts.len(),
        over
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(
            (1u32..top + 1).into_segmented(),
            0u32..highest + highest / 12 + 1,
        )?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .disable_x_mesh()
        .x_labels((top as usize + 1).min(40))
        .x_desc("children")
        .y_desc("forwarding (node, group) pairs")
        .draw()?;
    chart
        .draw_series((1..=top).map(|k| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(k), 0),
                    (SegmentValue::Exact(k + 1), bins[k as usize]),
                ],
                ALM.mix(0.8).filled(),
            );
            bar.set_margin(0, 0, 3, 3);
            bar
        }))?
        .label("forwarding nodes")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], ALM.mix(0.8).filled()));
    // The bound: right of this line a node has too many children.
    let edge = SegmentValue::Exact(bound + 1);
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(edge.clone(), 0), (edge, highest + highest / 12 + 1)],
            MARK.stroke_width(3),
        )))?
        .label(format!("bound {bound}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MARK.stroke_width(3)));
    legend(&mut chart, SeriesLabelPosition::UpperMiddle)
}

/// Link stress, the overlay against IP multicast, as CDFs on a log scale.
fn link_stress(area: &Area<'_>, st: &Stress) -> anyhow::Result<()> {
    let mut alm = st.alm_samples.clone();
    let mut ip = st.ip_samples.clone();
    let a = Dist::of(&mut alm);
    let b = Dist::of(&mut ip);
    if alm.is_empty() && ip.is_empty() {
        return no_data(area, "link stress: no link carried a message");
    }
    let hi = a.max.max(b.max).max(2.0) * 1.2;
    let caption = format!(
        "Link stress, one message per group: mean {:.2} overlay, {:.2} IP multicast",
        a.mean, b.mean
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((1f64..hi).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .x_label_formatter(&|x| format!("{x}"))
        .x_desc("copies on one physical link (log scale)")
        .y_desc("share of links carrying any")
        .draw()?;
    for (samples, color, name) in [(&alm, ALM, "overlay"), (&ip, MARK, "IP multicast")] {
        if samples.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                cdf(samples, CDF_STEPS),
                color.stroke_width(2),
            ))?
            .label(format!("{name} ({} links)", samples.len()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    for (d, color, name) in [(&a, ALM, "overlay"), (&b, MARK, "IP")] {
        if d.n > 0 {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(d.mean, 0.0), (d.mean, 1.0)],
                    6,
                    4,
                    color.mix(0.7).stroke_width(1),
                ))?
                .label(format!("{name} mean {:.2}", d.mean))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.mix(0.7).stroke_width(1))
                });
        }
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// Where each node of a tree goes: (horizontal slot, level). Leaves take
/// consecutive slots from the left, a parent sits above the middle of its
/// children, so no two links cross.
fn layout(d: &TreeDrawing) -> HashMap<usize, (f64, usize)> {
    let mut kids: HashMap<usize, Vec<usize>> = HashMap::new();
    for &(p, c, _) in &d.edges {
        kids.entry(p).or_default().push(c);
    }
    let mut at = HashMap::new();
    let mut next_leaf = 0.0;
    place(d.root, 0, &kids, &mut at, &mut next_leaf);
    at
}

fn place(
    n: usize,
    level: usize,
    kids: &HashMap<usize, Vec<usize>>,
    at: &mut HashMap<usize, (f64, usize)>,
    next_leaf: &mut f64,
) -> f64 {
    if let Some(&(x, _)) = at.get(&n) {
        return x; // not a tree: do not loop
    }
    at.insert(n, (*next_leaf, level));
    let xs: Vec<f64> = (kids.get(&n).into_iter().flatten())
        .map(|&c| place(c, level + 1, kids, at, next_leaf))
        .collect();
    let x = match (xs.first(), xs.last()) {
        (Some(a), Some(b)) => (a + b) / 2.0,
        _ => {
            let x = *next_leaf;
            *next_leaf += 1.0;
            x
        }
    };
    at.insert(n, (x, level));
    x
}

/// The tree drawn without Graphviz: levels top-down, as [`layout`] places
/// them.
fn tree_svg(d: &TreeDrawing) -> anyhow::Result<String> {
    const SLOT: i32 = 60;
    const LEVEL: i32 = 90;
    const TOP: i32 = 90;
    const SIDE: i32 = 30;
    const R: i32 = 15;
    let at = layout(d);
    let slots = at.values().map(|p| p.0).fold(0.0, f64::max) as i32 + 1;
    let levels = at.values().map(|p| p.1).max().unwrap_or(0) as i32 + 1;
    let size = (
        (2 * SIDE + slots * SLOT).max(760) as u32,
        (TOP + (levels - 1) * LEVEL + 50).max(240) as u32,
    );
    let offset = (size.0 as i32 - slots * SLOT) / 2;
    let px = |n: usize| -> (i32, i32) {
        let (x, l) = at[&n];
        (
            offset + (x * SLOT as f64) as i32 + SLOT / 2,
            TOP + l as i32 * LEVEL,
        )
    };
    render("tree.svg", size, |area| {
        let font = |size: u32| {
            ("sans-serif", size)
                .into_font()
                .into_text_style(area)
                .pos(Pos::new(HPos::Center, VPos::Center))
        };
        area.draw(&Text::new(
            format!(
                "group {} ({}): {} tree nodes, {} members",
                d.group,
                d.mid,
                d.edges.len() + 1,
                d.members.len()
            ),
            (size.0 as i32 / 2, 22),
            font(16),
        ))?;
        area.draw(&Text::new(
            "filled: member, hollow: forwarder only, gold ring: root; links in ms",
            (size.0 as i32 / 2, 46),
            font(12),
        ))?;
        for &(p, c, ms) in &d.edges {
            let (a, b) = (px(p), px(c));
            area.draw(&PathElement::new(
                vec![a, b],
                BLACK.mix(0.5).stroke_width(1),
            ))?;
            // Nearer the child, where siblings' links are further apart.
            let mid = ((2 * b.0 + a.0) / 3 + 4, (2 * b.1 + a.1) / 3);
            let label = ("sans-serif", 10)
                .into_font()
                .into_text_style(area)
                .color(&MARK)
                .pos(Pos::new(HPos::Left, VPos::Center));
            area.draw(&Text::new(format!("{ms:.1}"), mid, label))?;
        }
        for n in d.nodes() {
            let p = px(n);
            let member = d.members.contains(&n);
            let fill = if member { MEMBER } else { WHITE };
            area.draw(&Circle::new(p, R, fill.filled()))?;
            let ring = if n == d.root {
                ROOT.stroke_width(4)
            } else {
                BLACK.stroke_width(if member { 1 } else { 2 })
            };
            area.draw(&Circle::new(p, R, ring))?;
            let text = if member { &WHITE } else { &BLACK };
            area.draw(&Text::new(n.to_string(), p, font(10).color(text)))?;
        }
        Ok(())
    })
}

/// `#rrggbb`.
fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root with three children, each with two children of its own:
    /// 10 nodes, 9 links.
    fn drawing() -> TreeDrawing {
        let mut edges = Vec::new();
        for (i, c) in [11, 12, 13].into_iter().enumerate() {
            edges.push((10, c, 2.5 + i as f64));
            edges.push((c, 20 + 2 * i, 1.0));
            edges.push((c, 21 + 2 * i, 1.5));
        }
        TreeDrawing {
            group: 3,
            mid: "00ff".into(),
            root: 10,
            edges,
            members: [12, 20, 21, 22, 23, 24, 25].into(),
        }
    }

    fn report() -> Report {
        let mut r = Report::default();
        r.trees.stretch_samples = (0..500).map(|i| 1.0 + (i % 50) as f64 / 40.0).collect();
        r.trees.stretch_samples.push(9.0);
        r.trees.children_samples = [1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 4.0, 7.0].into();
        r.trees.max_children_bound = 5;
        r.trees.drawing = Some(drawing());
        r.stress = Some(Stress {
            alm_samples: (1..200).map(|i| (i % 17 + 1) as f64).collect(),
            ip_samples: (1..300).map(|i| (i % 3 + 1) as f64).collect(),
            ..Default::default()
        });
        r
    }

    fn is_svg(text: &str) -> bool {
        let t = text.trim_start();
        (t.starts_with("<svg") || t.starts_with("<?xml")) && text.trim_end().ends_with("</svg>")
    }

    #[test]
    fn writes_every_plot() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("plots/nested");
        let written = write_plots(&report(), &dir).unwrap();
        let names: Vec<String> = (written.iter())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "stretch.svg",
                "children.svg",
                "link-stress.svg",
                "tree.dot",
                "tree.svg"
            ]
        );
        for p in &written {
            let text = std::fs::read_to_string(p).unwrap();
            if p.extension().unwrap() == "svg" {
                assert!(is_svg(&text), "{} is not SVG", p.display());
            } else {
                assert!(text.starts_with("digraph"), "{}", p.display());
                assert_eq!(text.matches("->").count(), drawing().edges.len());
            }
        }
    }

    #[test]
    fn empty_report_still_plots() {
        let tmp = tempfile::tempdir().unwrap();
        let written = write_plots(&Report::default(), tmp.path()).unwrap();
        assert_eq!(written.len(), 2);
        for p in &written {
            assert!(is_svg(&std::fs::read_to_string(p).unwrap()));
        }
    }

    #[test]
    fn drawn_without_graphviz() {
        let d = drawing();
        let svg = tree_svg(&d).unwrap();
        assert!(is_svg(&svg));
        // Each node is a filled disc and a ring.
        assert_eq!(svg.matches("<circle").count(), 2 * (d.edges.len() + 1));
        let at = layout(&d);
        assert_eq!(at.len(), d.edges.len() + 1);
        assert_eq!(at[&10], (2.5, 0));
        assert_eq!(at[&25], (5.0, 2));
    }

    #[test]
    fn picks_the_smallest_group_worth_drawing() {
        assert_eq!(TreeDrawing::pick(&[100, 9, 8, 4, 30]), Some(2));
        assert_eq!(TreeDrawing::pick(&[4, 6, 5]), Some(1));
        assert_eq!(TreeDrawing::pick(&[]), None);
    }

    #[test]
    fn cdf_steps() {
        assert_eq!(
            cdf(&[1.0, 1.0, 2.0, 4.0], 100),
            [
                (1.0, 0.0),
                (1.0, 0.5),
                (2.0, 0.5),
                (2.0, 0.75),
                (4.0, 0.75),
                (4.0, 1.0)
            ]
        );
        let many: Vec<f64> = (0..10_000).map(f64::from).collect();
        let thin = cdf(&many, 100);
        assert!(thin.len() <= 2 * 101);
        assert_eq!(thin.last(), Some(&(9999.0, 1.0)));
    }
}
