//! One image's assessment as a person reads it: the image model's category, the fused
//! category, the four descriptors in the lexicon's words and the discordance flags.
//! The server's JSON, the web page and the printed reports all show this one structure.

use serde::Serialize;
use serde_json::{json, Value};

use crate::fusion::FusionModel;
use crate::lexicon::{category_meaning, describe_features, discordance, CategoryMeaning};
use crate::lexicon::{DescriptorReading, Flag};

/// A category with its probabilities (in the model's class order) and its atlas meaning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grade {
    pub label: String,
    pub probability: f64,
    pub probabilities: Vec<(String, f64)>,
    pub meaning: Option<CategoryMeaning>,
}

impl Grade {
    pub fn new(classes: &[String], probabilities: &[f64]) -> Self {
        let best = crate::predict::argmax(probabilities);
        let label = classes.get(best).cloned().unwrap_or_default();
        Self {
            meaning: category_meaning(&label),
            probability: probabilities.get(best).copied().unwrap_or(0.0),
            label,
            probabilities: classes
                .iter()
                .cloned()
                .zip(probabilities.iter().copied())
                .collect(),
        }
    }

    /// `{"label", "probability", "probabilities": {class: p}, "meaning"}`.
    pub fn to_json(&self) -> Value {
        let probs: serde_json::Map<String, Value> = self
            .probabilities
            .iter()
            .map(|(c, p)| (c.clone(), json!(p)))
            .collect();
        json!({
            "label": self.label,
            "probability": self.probability,
            "probabilities": probs,
            "meaning": self.meaning,
        })
    }
}

/// Everything said about one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    /// The image model's category.
    pub birads: Option<Grade>,
    /// The fusion of the image model's and the feature model's outputs.
    pub fused: Option<Grade>,
    pub descriptors: Option<Vec<DescriptorReading>>,
    pub flags: Vec<Flag>,
}

/// Assess one image from the models' outputs: `classes`/`birads` from the image model,
/// `features` (P(suspicious) per feature) from the feature model, and the fusion when loaded
/// (it needs both).
pub fn assess(
    classes: &[String],
    birads: Option<&[f32]>,
    features: Option<&[f32; 4]>,
    fusion: Option<&FusionModel>,
) -> Assessment {
    let to64 = |p: &[f32]| p.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let grade = birads.map(|p| Grade::new(classes, &to64(p)));
    let fused = match (fusion, birads, features) {
        (Some(f), Some(p), Some(q)) => Some(Grade::new(&f.classes, &f.probabilities(p, q))),
        _ => None,
    };
    let descriptors = features.map(describe_features);
    let flags = discordance(
        grade.as_ref().map(|g| g.label.as_str()),
        fused.as_ref().map(|g| g.label.as_str()),
        descriptors.as_deref(),
    );
    Assessment {
        birads: grade,
        fused,
        descriptors,
        flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assessment_joins_category_descriptors_and_flags() {
        let classes: Vec<String> = ["2", "3", "4", "5"].iter().map(|s| s.to_string()).collect();
        let a = assess(
            &classes,
            Some(&[0.1, 0.6, 0.2, 0.1]),
            Some(&[0.9, 0.2, 0.7, 0.8]),
            None,
        );
        let g = a.birads.as_ref().unwrap();
        assert_eq!(g.label, "3");
        assert!((g.probability - 0.6).abs() < 1e-6);
        assert_eq!(g.meaning.as_ref().unwrap().assessment, "Probably benign");
        assert_eq!(a.flags.len(), 1);
        assert_eq!(a.flags[0].rule, "low-category-suspicious-descriptors");
        let j = g.to_json();
        assert_eq!(j["label"], "3");
        assert_eq!(j["meaning"]["assessment"], "Probably benign");
        assert!((j["probabilities"]["4"].as_f64().unwrap() - 0.2).abs() < 1e-6);
        // Without a feature model: no descriptors, no descriptor flags.
        let a = assess(&classes, Some(&[0.0, 0.0, 0.0, 1.0]), None, None);
        assert!(a.descriptors.is_none() && a.flags.is_empty() && a.fused.is_none());
    }
}
