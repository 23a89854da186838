//! Judging a computed score against the node's history: validity,
//! suspicion and confidence.

use serde::{Deserialize, Serialize};

/// The lowest valid score.
pub const MIN_VALID_SCORE: f64 = 0.1;
/// Above this many perfect scores in 24 h, another perfect score is suspicious.
pub const MAX_PERFECT_SCORES_24H: usize = 5;

/// The node's recent validation scores, summarized (count, mean, standard
/// deviation): constant size however many validations a node has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreHistory {
    /// Scores of the last 24 hours.
    pub count_24h: u64,
    /// Their mean (0 without scores).
    pub mean_24h: f64,
    /// Scores of the last 168 hours (including the last 24).
    pub count_168h: u64,
    /// Their mean (0 without scores).
    pub mean_168h: f64,
    /// Their population standard deviation (0 without scores).
    pub std_168h: f64,
}

#[cfg(test)]
impl ScoreHistory {
    /// The summary of explicit score lists (the stored summary is computed
    /// by MongoDB: see `poot::inputs`, covered end to end).
    pub fn from_scores(last_24h: &[f64], last_168h: &[f64]) -> Self {
        let mean = |xs: &[f64]| {
            if xs.is_empty() {
                0.0
            } else {
                xs.iter().sum::<f64>() / xs.len() as f64
            }
        };
        let mean_168h = mean(last_168h);
        let var = if last_168h.is_empty() {
            0.0
        } else {
            last_168h
                .iter()
                .map(|x| (x - mean_168h).powi(2))
                .sum::<f64>()
                / last_168h.len() as f64
        };
        Self {
            count_24h: last_24h.len() as u64,
            mean_24h: mean(last_24h),
            count_168h: last_168h.len() as u64,
            mean_168h,
            std_168h: var.sqrt(),
        }
    }
}

/// The verdict on one score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// 0.1 ≤ score ≤ 100.
    pub is_valid: bool,
    /// Far from the 24 h average, or too many perfect scores.
    pub suspicious: bool,
    /// 0.1–1: how well the score fits the 168 h history (0.5 without history).
    pub confidence: f64,
    /// Why it is invalid, if it is.
    pub errors: Vec<String>,
}

/// Assesses `score` against `history`.
pub fn assess(score: f64, history: &ScoreHistory) -> Assessment {
    let mut errors = Vec::new();
    if score < MIN_VALID_SCORE {
        errors.push(format!(
            "score {score} is below the minimum of {MIN_VALID_SCORE}"
        ));
    }
    if score > 100.0 {
        errors.push(format!("score {score} is above 100"));
    }
    let mut suspicious = false;
    if history.count_24h > 0 {
        let avg = history.mean_24h;
        if (score - avg).abs() > 2.0 * avg {
            suspicious = true;
        }
        if score >= 100.0 && history.count_24h > MAX_PERFECT_SCORES_24H as u64 {
            suspicious = true;
        }
    }
    let confidence = if history.count_168h == 0 {
        0.5
    } else {
        let (m, std) = (history.mean_168h, history.std_168h);
        // Rounding noise of the one-pass deviation counts as zero.
        if std < 1e-9 {
            if (score - m).abs() < 1e-9 { 1.0 } else { 0.1 }
        } else {
            (1.0 - ((score - m).abs() / std) / 3.0).max(0.1)
        }
    };
    Assessment {
        is_valid: errors.is_empty(),
        suspicious,
        confidence: (confidence * 1e4).round() / 1e4,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_history_gives_confidence_one_half() {
        let a = assess(50.0, &ScoreHistory::default());
        assert_eq!((a.is_valid, a.suspicious, a.confidence), (true, false, 0.5));
    }

    #[test]
    fn scores_outside_the_valid_range_are_invalid() {
        assert!(!assess(0.05, &ScoreHistory::default()).is_valid);
        assert!(!assess(100.5, &ScoreHistory::default()).is_valid);
        assert!(assess(0.1, &ScoreHistory::default()).is_valid);
    }

    #[test]
    fn a_score_far_from_the_24h_average_is_suspicious() {
        let h = ScoreHistory::from_scores(&[10.0, 10.0], &[10.0, 10.0]);
        assert!(assess(31.0, &h).suspicious, "|31-10| > 20");
        assert!(!assess(30.0, &h).suspicious, "|30-10| = 20 is not above");
    }

    #[test]
    fn a_perfect_score_after_more_than_five_scores_in_24h_is_suspicious() {
        let h = ScoreHistory::from_scores(&[100.0; 6], &[100.0; 6]);
        assert!(assess(100.0, &h).suspicious);
        let five = ScoreHistory::from_scores(&[100.0; 5], &[100.0; 5]);
        assert!(!assess(100.0, &five).suspicious);
    }

    #[test]
    fn confidence_follows_the_z_score() {
        let h = ScoreHistory::from_scores(&[], &[40.0, 60.0]); // mean 50, std 10
        assert_eq!(assess(50.0, &h).confidence, 1.0);
        assert_eq!(assess(65.0, &h).confidence, 0.5); // z = 1.5
        assert_eq!(assess(95.0, &h).confidence, 0.1); // z = 4.5 → clamped
        let flat = ScoreHistory::from_scores(&[], &[30.0, 30.0]);
        assert_eq!(assess(30.0, &flat).confidence, 1.0);
        assert_eq!(assess(31.0, &flat).confidence, 0.1);
    }
}
