//! `data check`: what a dataset holds and what is wrong with it, item by item.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::Serialize;

use crate::image_ops::{decode, dimensions};
use crate::sample::{Dataset, ImageSource, Problem, FEATURE_NAMES};

#[derive(Debug, Clone, Serialize)]
pub struct FeatureCount {
    pub name: String,
    pub positive: usize,
    pub negative: usize,
    pub unlabelled: usize,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SizeStats {
    pub count: usize,
    pub min_width: u32,
    pub median_width: u32,
    pub max_width: u32,
    pub min_height: u32,
    pub median_height: u32,
    pub max_height: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub description: String,
    pub classes: Vec<String>,
    pub samples: usize,
    pub per_class: Vec<(String, usize)>,
    pub unclassified: usize,
    pub per_feature: Vec<FeatureCount>,
    pub per_source: Vec<(String, usize)>,
    pub with_lesion_box: usize,
    pub groups: usize,
    pub sizes: SizeStats,
    pub errors: usize,
    pub warnings: usize,
    pub problems: Vec<Problem>,
}

fn median(v: &mut [u32]) -> u32 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// Count everything and read every image's size (header only, or a full decode with
/// `full_decode`). Unreadable images become errors in the dataset's problem list.
pub fn check(ds: &mut Dataset, full_decode: bool) -> Summary {
    let sizes: Vec<Result<(u32, u32), String>> = ds
        .samples
        .par_iter()
        .map(|s| match (&s.image, full_decode) {
            (ImageSource::Path(p), false) => dimensions(p).map_err(|e| e.to_string()),
            (src, _) => decode(src)
                .map(|i| i.dimensions())
                .map_err(|e| e.to_string()),
        })
        .collect();
    let mut ws = Vec::new();
    let mut hs = Vec::new();
    for (s, r) in ds.samples.iter().zip(&sizes) {
        match r {
            Ok((w, h)) => {
                ws.push(*w);
                hs.push(*h);
            }
            Err(e) => ds
                .problems
                .push(Problem::error(&s.image, format!("unreadable image: {e}"))),
        }
    }
    let size_stats = SizeStats {
        count: ws.len(),
        min_width: ws.iter().copied().min().unwrap_or(0),
        max_width: ws.iter().copied().max().unwrap_or(0),
        min_height: hs.iter().copied().min().unwrap_or(0),
        max_height: hs.iter().copied().max().unwrap_or(0),
        median_width: median(&mut ws),
        median_height: median(&mut hs),
    };
    let mut per_class = vec![0usize; ds.classes.len()];
    let mut unclassified = 0;
    let mut feats = [[0usize; 3]; 4];
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    let mut groups = std::collections::HashSet::new();
    for s in &ds.samples {
        match s.class {
            Some(c) if c < per_class.len() => per_class[c] += 1,
            _ => unclassified += 1,
        }
        for (f, v) in s.features.iter().enumerate() {
            feats[f][match v {
                Some(true) => 0,
                Some(false) => 1,
                None => 2,
            }] += 1;
        }
        *sources.entry(s.source.clone()).or_default() += 1;
        groups.insert(s.group_key());
    }
    Summary {
        description: ds.description.clone(),
        classes: ds.classes.names().to_vec(),
        samples: ds.samples.len(),
        per_class: ds.classes.names().iter().cloned().zip(per_class).collect(),
        unclassified,
        per_feature: FEATURE_NAMES
            .iter()
            .zip(feats)
            .map(|(n, c)| FeatureCount {
                name: n.to_string(),
                positive: c[0],
                negative: c[1],
                unlabelled: c[2],
            })
            .collect(),
        per_source: sources.into_iter().collect(),
        with_lesion_box: ds.samples.iter().filter(|s| s.lesion.is_some()).count(),
        groups: groups.len(),
        sizes: size_stats,
        errors: ds.error_count(),
        warnings: ds.warning_count(),
        problems: ds.problems.clone(),
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.description)?;
        writeln!(
            f,
            "  samples: {} ({} groups, {} with a lesion box)",
            self.samples, self.groups, self.with_lesion_box
        )?;
        writeln!(f, "  per source:")?;
        for (s, n) in &self.per_source {
            writeln!(f, "    {s:<24} {n:>6}")?;
        }
        writeln!(f, "  per BI-RADS class ({}):", self.classes.join(", "))?;
        for (c, n) in &self.per_class {
            writeln!(f, "    {c:<24} {n:>6}")?;
        }
        writeln!(f, "    {:<24} {:>6}", "(no class)", self.unclassified)?;
        writeln!(
            f,
            "  per feature:            {:>8} {:>8} {:>10}",
            "1", "0", "unlabelled"
        )?;
        for fc in &self.per_feature {
            writeln!(
                f,
                "    {:<20} {:>8} {:>8} {:>10}",
                fc.name, fc.positive, fc.negative, fc.unlabelled
            )?;
        }
        let s = &self.sizes;
        writeln!(
            f,
            "  image sizes ({} read): width {}..{} (median {}), height {}..{} (median {})",
            s.count,
            s.min_width,
            s.max_width,
            s.median_width,
            s.min_height,
            s.max_height,
            s.median_height
        )?;
        writeln!(
            f,
            "  problems: {} errors, {} warnings",
            self.errors, self.warnings
        )?;
        for p in &self.problems {
            writeln!(f, "    {p}")?;
        }
        Ok(())
    }
}
