//! YOLO label files (`c cx cy w h`, one object per line, coordinates normalised to [0,1]).
//! Classification files carry a 1-based class id, feature files 0/1.

use crate::sample::LesionBox;

/// One parsed object line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YoloLine {
    pub class: i64,
    /// `None` when the line carries only a class id.
    pub bbox: Option<LesionBox>,
}

/// What a label file says about its image, after interpretation.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// 0-based class index (classification) or 0/1 (features).
    pub value: usize,
    pub bbox: Option<LesionBox>,
    /// Caveats that did not invalidate the label (extra lines, missing box, ...).
    pub warnings: Vec<String>,
}

/// How to read the class id of a label file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassIds {
    /// 1..=n map to indices 0..n (the competition's classification labels).
    OneBased(usize),
    /// 0 or 1 (feature labels).
    Binary,
}

/// Coordinates this close outside [0,1] are rounding noise from annotation tools: clamped
/// with a warning rather than rejected.
const COORD_TOLERANCE: f32 = 1e-3;

fn parse_line(line: &str) -> Result<(YoloLine, Option<String>), String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let class_field = fields[0];
    let class_f: f64 = class_field
        .parse()
        .map_err(|_| format!("class id '{class_field}' is not a number"))?;
    if !class_f.is_finite() || class_f.fract() != 0.0 {
        return Err(format!("class id '{class_field}' is not an integer"));
    }
    let class = class_f as i64;
    match fields.len() {
        1 => Ok((
            YoloLine { class, bbox: None },
            Some("line has a class id but no box".into()),
        )),
        5 => {
            let mut v = [0f32; 4];
            for (i, f) in fields[1..].iter().enumerate() {
                let x: f32 = f
                    .parse()
                    .map_err(|_| format!("box field '{f}' is not a number"))?;
                if !x.is_finite() {
                    return Err(format!("box field '{f}' is not finite"));
                }
                v[i] = x;
            }
            let mut warn = None;
            if v.iter().any(|x| !(0.0..=1.0).contains(x)) {
                if v.iter()
                    .all(|x| (-COORD_TOLERANCE..=1.0 + COORD_TOLERANCE).contains(x))
                {
                    warn = Some(format!("box {v:?} slightly outside [0,1], clamped"));
                    v.iter_mut().for_each(|x| *x = x.clamp(0.0, 1.0));
                } else {
                    return Err(format!("box {v:?} has coordinates outside [0,1]"));
                }
            }
            let bbox = LesionBox {
                cx: v[0],
                cy: v[1],
                w: v[2],
                h: v[3],
            };
            bbox.validate()?;
            Ok((
                YoloLine {
                    class,
                    bbox: Some(bbox),
                },
                warn,
            ))
        }
        n => Err(format!("expected 5 fields 'c cx cy w h', found {n}")),
    }
}

/// Parse the text of a YOLO label file. Errors name the line.
pub fn parse_yolo(text: &str) -> Result<(Vec<YoloLine>, Vec<String>), String> {
    let mut lines = Vec::new();
    let mut warnings = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        let (parsed, warn) = parse_line(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if let Some(w) = warn {
            warnings.push(format!("line {}: {w}", i + 1));
        }
        lines.push(parsed);
    }
    if lines.is_empty() {
        return Err("empty label file".into());
    }
    Ok((lines, warnings))
}

/// Parse and interpret a label file: the class of the first line, its box. Several lines
/// that agree on the class are accepted with a warning; lines that disagree are an error
/// (the image's label is ambiguous).
pub fn interpret(text: &str, ids: ClassIds) -> Result<Label, String> {
    let (lines, mut warnings) = parse_yolo(text)?;
    let first = lines[0];
    let value = match ids {
        ClassIds::OneBased(n) => {
            if first.class < 1 || first.class > n as i64 {
                return Err(format!(
                    "class id {} out of range 1..={n} (ids are 1-based)",
                    first.class
                ));
            }
            (first.class - 1) as usize
        }
        ClassIds::Binary => match first.class {
            0 | 1 => first.class as usize,
            c => return Err(format!("feature value {c} is not 0 or 1")),
        },
    };
    if lines.len() > 1 {
        if lines.iter().any(|l| l.class != first.class) {
            let ids: Vec<i64> = lines.iter().map(|l| l.class).collect();
            return Err(format!(
                "{} lines with conflicting class ids {ids:?}",
                lines.len()
            ));
        }
        warnings.push(format!("{} lines; the first box is used", lines.len()));
    }
    let bbox = first.bbox.or_else(|| lines.iter().find_map(|l| l.bbox));
    Ok(Label {
        value,
        bbox,
        warnings,
    })
}

/// Format a YOLO line the way the competition files are written.
pub fn format_yolo(class: i64, b: &LesionBox) -> String {
    format!("{class} {:.6} {:.6} {:.6} {:.6}\n", b.cx, b.cy, b.w, b.h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_classification_label() {
        let l = interpret("3 0.5 0.4 0.2 0.1\n", ClassIds::OneBased(6)).unwrap();
        assert_eq!(l.value, 2);
        let b = l.bbox.unwrap();
        assert_eq!((b.cx, b.cy, b.w, b.h), (0.5, 0.4, 0.2, 0.1));
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn rejects_bad_labels_with_reasons() {
        let cases = [
            ("", "empty"),
            ("  \n\n", "empty"),
            ("0 0.5 0.5 0.1 0.1", "out of range"),
            ("7 0.5 0.5 0.1 0.1", "out of range"),
            ("a 0.5 0.5 0.1 0.1", "not a number"),
            ("1 0.5 0.5 0.1", "expected 5 fields"),
            ("1 0.5 nan 0.1 0.1", "not finite"),
            ("1 0.5 0.5 -0.3 0.1", "outside"),
            ("1 0.5 1.7 0.1 0.1", "outside"),
            ("1.5 0.5 0.5 0.1 0.1", "not an integer"),
            ("1 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1", "conflicting"),
        ];
        for (text, want) in cases {
            let err = interpret(text, ClassIds::OneBased(6)).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        assert!(interpret("2 0.5 0.5 0.1 0.1", ClassIds::Binary)
            .unwrap_err()
            .contains("not 0 or 1"));
    }

    #[test]
    fn tolerates_what_is_recoverable() {
        let l = interpret("1 0.5 0.5 0.1 0.1\n1 0.2 0.2 0.1 0.1\n", ClassIds::Binary).unwrap();
        assert_eq!(l.value, 1);
        assert_eq!(l.bbox.unwrap().cx, 0.5);
        assert_eq!(l.warnings.len(), 1);
        let l = interpret("0", ClassIds::Binary).unwrap();
        assert_eq!((l.value, l.bbox), (0, None));
        let l = interpret("1 1.0004 0.5 0.1 0.1", ClassIds::Binary).unwrap();
        assert_eq!(l.bbox.unwrap().cx, 1.0);
        assert!(l.warnings[0].contains("clamped"));
        let l = interpret("\u{feff}6 0.5 0.5 0.1 0.1\r\n", ClassIds::OneBased(6)).unwrap();
        assert_eq!(l.value, 5);
    }

    #[test]
    fn format_round_trips() {
        let b = LesionBox {
            cx: 0.25,
            cy: 0.5,
            w: 0.125,
            h: 0.0625,
        };
        let s = format_yolo(4, &b);
        assert_eq!(s, "4 0.250000 0.500000 0.125000 0.062500\n");
        assert_eq!(interpret(&s, ClassIds::OneBased(6)).unwrap().bbox, Some(b));
    }
}
