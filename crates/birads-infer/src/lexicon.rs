//! The ACR BI-RADS ultrasound lexicon in words: what the four features and the categories
//! mean, and the discordance rules between them.
//!
//! The feature models answer the competition's four yes/no questions (SEED.md), 1 being the
//! suspicious finding. In the lexicon's words:
//!
//! | feature | 0 | 1 (suspicious) |
//! |---|---|---|
//! | boundary → margin | circumscribed | not circumscribed |
//! | calcification → calcifications | absent | present |
//! | direction → orientation | parallel | not parallel |
//! | shape → shape | regular (oval or round) | irregular |
//!
//! A category's entry states what the category means in the atlas (5th edition): its
//! likelihood of malignancy and the management the atlas attaches to it. It describes the
//! category, not the patient.
//!
//! # Discordance rules
//!
//! A descriptor counts as suspicious when its probability is at least 0.5 (the label the
//! competition CSV shows). Flags are raised for a category (the image model's, and the fused
//! one when a fusion model is loaded):
//!
//! - **`low-category-suspicious-descriptors`**: category 2 or 3 with two or more suspicious
//!   descriptors. The atlas keeps 3 for masses with all-benign descriptors (oval, parallel,
//!   circumscribed); two suspicious descriptors rarely belong to a probably-benign mass.
//! - **`high-category-no-suspicious-descriptor`**: category 5 with no suspicious descriptor:
//!   a "highly suggestive" call that the descriptors do not support.
//! - **`fusion-crosses-biopsy-threshold`**: the image model and the fused model fall on
//!   opposite sides of the biopsy threshold (one says 2 or 3, the other 4 or 5).
//!
//! These rules are the only place discordance is decided; the JSON answer, the web page and
//! the printed reports show their output.

use serde::Serialize;

use crate::metrics::is_suspicious_category;

/// The probability from which a descriptor counts as suspicious.
pub const SUSPICIOUS_FROM: f32 = 0.5;

/// One of the four features in the lexicon's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// The competition's name (`boundary`, …).
    pub feature: &'static str,
    /// The lexicon's name of the descriptor (`margin`, …).
    pub lexicon: &'static str,
    /// The words for 0 and for 1 (the suspicious finding).
    pub absent: &'static str,
    pub present: &'static str,
}

/// The four descriptors in the competition's feature order.
pub const DESCRIPTORS: [Descriptor; 4] = [
    Descriptor {
        feature: "boundary",
        lexicon: "margin",
        absent: "circumscribed",
        present: "not circumscribed",
    },
    Descriptor {
        feature: "calcification",
        lexicon: "calcifications",
        absent: "absent",
        present: "present",
    },
    Descriptor {
        feature: "direction",
        lexicon: "orientation",
        absent: "parallel",
        present: "not parallel",
    },
    Descriptor {
        feature: "shape",
        lexicon: "shape",
        absent: "regular (oval or round)",
        present: "irregular",
    },
];

/// A feature's reading: the descriptor in words with the probability of the suspicious
/// finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DescriptorReading {
    pub feature: &'static str,
    pub lexicon: &'static str,
    /// The words for the finding the model favours (`not circumscribed`).
    pub finding: &'static str,
    /// 1 when the suspicious finding is favoured (the competition's label).
    pub label: u8,
    /// Probability of the suspicious finding.
    pub probability: f32,
    pub suspicious: bool,
}

/// The four readings from P(suspicious) per feature.
pub fn describe_features(p: &[f32; 4]) -> Vec<DescriptorReading> {
    DESCRIPTORS
        .iter()
        .zip(p)
        .map(|(d, &p)| {
            let suspicious = p >= SUSPICIOUS_FROM;
            DescriptorReading {
                feature: d.feature,
                lexicon: d.lexicon,
                finding: if suspicious { d.present } else { d.absent },
                label: suspicious as u8,
                probability: p,
                suspicious,
            }
        })
        .collect()
}

/// What a BI-RADS category means in the atlas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryMeaning {
    pub category: String,
    /// `Probably benign`, …
    pub assessment: &'static str,
    /// The likelihood of malignancy the atlas gives the category.
    pub likelihood: &'static str,
    /// The management the atlas attaches to the category.
    pub management: &'static str,
}

/// The atlas entry of a category name (`2`, `4A`, `BI-RADS 4`, …); `None` for names outside
/// the lexicon.
pub fn category_meaning(name: &str) -> Option<CategoryMeaning> {
    let n = birads_data::sample::normalise_class_name(name);
    let (assessment, likelihood, management) = match n.as_str() {
        "0" => (
            "Incomplete",
            "not assessable",
            "additional imaging evaluation needed",
        ),
        "1" => ("Negative", "essentially 0%", "routine screening"),
        "2" => ("Benign", "essentially 0%", "routine screening"),
        "3" => (
            "Probably benign",
            "above 0% and at most 2%",
            "short-interval (6-month) follow-up or continued surveillance",
        ),
        "4" => (
            "Suspicious",
            "above 2% and below 95%",
            "tissue diagnosis (biopsy)",
        ),
        "4A" => (
            "Low suspicion for malignancy",
            "above 2% and at most 10%",
            "tissue diagnosis (biopsy)",
        ),
        "4B" => (
            "Moderate suspicion for malignancy",
            "above 10% and at most 50%",
            "tissue diagnosis (biopsy)",
        ),
        "4C" => (
            "High suspicion for malignancy",
            "above 50% and below 95%",
            "tissue diagnosis (biopsy)",
        ),
        "5" => (
            "Highly suggestive of malignancy",
            "95% or more",
            "tissue diagnosis (biopsy)",
        ),
        "6" => (
            "Known biopsy-proven malignancy",
            "proven",
            "surgical excision when clinically appropriate",
        ),
        _ => return None,
    };
    Some(CategoryMeaning {
        category: n,
        assessment,
        likelihood,
        management,
    })
}

/// A discordance between a category and the descriptors (or between two categories).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// Stable identifier of the rule (see the module documentation).
    pub rule: &'static str,
    /// Which category it concerns: `image` or `fused`.
    pub about: &'static str,
    pub reason: String,
}

/// Rank of a category on the suspicion scale: 2 → 0, 3 → 1, 4/4A/4B/4C → 2, 5 → 3; `None`
/// outside 2–5.
fn level(category: &str) -> Option<u8> {
    let n = birads_data::sample::normalise_class_name(category);
    match n.as_str() {
        "2" => Some(0),
        "3" => Some(1),
        "5" => Some(3),
        _ if n.starts_with('4') => Some(2),
        _ => None,
    }
}

fn suspicious_names(d: &[DescriptorReading]) -> Vec<String> {
    d.iter()
        .filter(|r| r.suspicious)
        .map(|r| format!("{} {}", r.lexicon, r.finding))
        .collect()
}

/// Flags of one category against the descriptors.
fn category_flags(category: &str, about: &'static str, d: &[DescriptorReading]) -> Vec<Flag> {
    let sus = suspicious_names(d);
    match level(category) {
        Some(0 | 1) if sus.len() >= 2 => vec![Flag {
            rule: "low-category-suspicious-descriptors",
            about,
            reason: format!(
                "BI-RADS {category} with {} suspicious descriptors ({})",
                sus.len(),
                sus.join(", ")
            ),
        }],
        Some(3) if sus.is_empty() => vec![Flag {
            rule: "high-category-no-suspicious-descriptor",
            about,
            reason: format!("BI-RADS {category} with no suspicious descriptor"),
        }],
        _ => Vec::new(),
    }
}

/// Every discordance flag of one image: the image model's category, the fused category (when
/// there is one) and the descriptors (when there is a feature model).
pub fn discordance(
    image_category: Option<&str>,
    fused_category: Option<&str>,
    descriptors: Option<&[DescriptorReading]>,
) -> Vec<Flag> {
    let mut flags = Vec::new();
    if let Some(d) = descriptors {
        if let Some(c) = image_category {
            flags.extend(category_flags(c, "image", d));
        }
        if let Some(c) = fused_category {
            flags.extend(category_flags(c, "fused", d));
        }
    }
    if let (Some(i), Some(f)) = (image_category, fused_category) {
        if level(i).is_some()
            && level(f).is_some()
            && is_suspicious_category(i) != is_suspicious_category(f)
        {
            flags.push(Flag {
                rule: "fusion-crosses-biopsy-threshold",
                about: "fused",
                reason: format!(
                    "the image model says BI-RADS {i}, the fusion of image and descriptors says {f}: \
                     one side of the biopsy threshold each"
                ),
            });
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(p: [f32; 4]) -> Vec<DescriptorReading> {
        describe_features(&p)
    }

    #[test]
    fn each_feature_reads_as_its_lexicon_descriptor() {
        let low = readings([0.1, 0.2, 0.3, 0.49]);
        let high = readings([0.9, 0.8, 0.7, 0.5]);
        let words = |r: &[DescriptorReading]| {
            r.iter()
                .map(|x| format!("{} {}", x.lexicon, x.finding))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            words(&low),
            [
                "margin circumscribed",
                "calcifications absent",
                "orientation parallel",
                "shape regular (oval or round)"
            ]
        );
        assert_eq!(
            words(&high),
            [
                "margin not circumscribed",
                "calcifications present",
                "orientation not parallel",
                "shape irregular"
            ]
        );
        assert!(low.iter().all(|r| r.label == 0 && !r.suspicious));
        assert!(high.iter().all(|r| r.label == 1 && r.suspicious));
        assert_eq!(high[3].probability, 0.5);
        assert_eq!(
            DESCRIPTORS.map(|d| d.feature),
            birads_data::FEATURE_NAMES,
            "descriptor order is the competition's feature order"
        );
    }

    #[test]
    fn categories_read_with_their_likelihood_and_management() {
        let m = |c: &str| category_meaning(c).unwrap();
        assert_eq!(m("2").assessment, "Benign");
        assert!(m("3").management.contains("short-interval"));
        assert_eq!(m("3").likelihood, "above 0% and at most 2%");
        assert_eq!(m("4a").category, "4A");
        assert_eq!(m("4A").likelihood, "above 2% and at most 10%");
        assert_eq!(m("4B").likelihood, "above 10% and at most 50%");
        assert_eq!(m("4C").likelihood, "above 50% and below 95%");
        assert_eq!(m("4").likelihood, "above 2% and below 95%");
        for c in ["4", "4A", "4B", "4C", "5"] {
            assert!(m(c).management.contains("biopsy"), "{c}");
        }
        assert_eq!(m("BI-RADS 5").assessment, "Highly suggestive of malignancy");
        assert!(category_meaning("7").is_none());
        assert!(category_meaning("benign").is_none());
    }

    #[test]
    fn discordance_rules() {
        let two = readings([0.9, 0.1, 0.8, 0.2]);
        let one = readings([0.9, 0.1, 0.1, 0.2]);
        let none = readings([0.1, 0.1, 0.1, 0.1]);
        // Low category with two or more suspicious descriptors.
        let f = discordance(Some("3"), None, Some(&two));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "low-category-suspicious-descriptors");
        assert!(
            f[0].reason.contains("margin not circumscribed"),
            "{}",
            f[0].reason
        );
        assert!(f[0].reason.contains("orientation not parallel"));
        assert_eq!(discordance(Some("2"), None, Some(&two)).len(), 1);
        assert!(discordance(Some("3"), None, Some(&one)).is_empty());
        assert!(discordance(Some("4A"), None, Some(&two)).is_empty());
        // Category 5 with none.
        let f = discordance(Some("5"), None, Some(&none));
        assert_eq!(f[0].rule, "high-category-no-suspicious-descriptor");
        assert!(discordance(Some("5"), None, Some(&one)).is_empty());
        assert!(discordance(Some("4C"), None, Some(&none)).is_empty());
        // Without descriptors only the threshold rule can fire.
        assert!(discordance(Some("5"), None, None).is_empty());
        let f = discordance(Some("3"), Some("4B"), None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "fusion-crosses-biopsy-threshold");
        assert!(discordance(Some("4A"), Some("5"), None).is_empty());
        assert!(discordance(Some("2"), Some("3"), None).is_empty());
        // Both categories checked against the descriptors, each named.
        let f = discordance(Some("2"), Some("5"), Some(&none));
        let rules: Vec<(&str, &str)> = f.iter().map(|x| (x.rule, x.about)).collect();
        assert_eq!(
            rules,
            [
                ("high-category-no-suspicious-descriptor", "fused"),
                ("fusion-crosses-biopsy-threshold", "fused")
            ]
        );
    }
}
