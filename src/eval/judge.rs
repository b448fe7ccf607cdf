//! Pairwise judgment with a local judge: two sets of replies to the same prompts (A and B)
//! compared by a model the user loads, through an editable judge prompt (a minijinja
//! template; the default is `assets/eval/judge_prompt.jinja`), giving wins, losses and
//! ties of A against B and a win rate with its 95 % interval.
//!
//! - **Both orders.** Judges, small ones most, favour a position. Each pair is asked twice,
//!   A's reply shown first and then B's, and the two answers are combined: a reply wins
//!   only when it wins in both orders; anything else is a tie. A judge that always picks
//!   the first position thus gives ties, never a win.
//! - **Answer by probability, not by parsing.** The judge is asked to answer `A`, `B` or
//!   `tie`, and its answer is read from its next-token probabilities after the prompt: the
//!   probability of the tokens that start `A` / ` A`, `B` / ` B`, and `tie` / ` tie` /
//!   `Tie` / ` Tie`, each summed and then normalized over the three. Nothing is generated,
//!   so a small model that would ramble, restate the question or answer "Response A is…"
//!   still gives a verdict, always one of the three; the probabilities are kept in the
//!   result, with the share of the judge's probability that went to the three answers at
//!   all (`answer_mass`: a low figure says the judge did not take up the format).
//! - **Win rate.** Ties count half: `(wins + ties / 2) / pairs`. Its interval is Wilson's
//!   score interval at 95 % (z = 1.96) with that rate and the number of pairs, which treats
//!   a tie as half a win; with ties it is an approximation, a little wider than needed.
//!
//! [`JudgeScorer`] is the one thing that asks the judge; [`ModelJudge`] asks a loaded model
//! (with an optional adapter), and tests plug in a judge of their own.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::infer::next_token_logits;
use crate::model::lora::LoraSet;
use crate::model::{ChatMessage, Model};

/// The default judge prompt.
pub const DEFAULT_JUDGE_PROMPT: &str = include_str!("../../assets/eval/judge_prompt.jinja");

/// z of a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Why a judgment stopped without a result.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("the judge prompt {source_name}: {message}")]
    Template {
        source_name: String,
        message: String,
    },
    #[error("the judge model {model}: {message}")]
    Answers { model: String, message: String },
    #[error("pair {index} (prompt {prompt:?}): {message}")]
    Pair {
        index: usize,
        prompt: String,
        message: String,
    },
    #[error("there is nothing to judge: no pairs of replies")]
    Empty,
    #[error("the judgment was cancelled")]
    Cancelled,
}

/// The judge prompt: a minijinja template of `prompt`, `response_a` and `response_b`.
#[derive(Debug, Clone)]
pub struct JudgePrompt {
    /// The template as written.
    pub text: String,
    /// Where it came from (a file, or `default`), for errors.
    pub source_name: String,
}

impl JudgePrompt {
    /// The built-in prompt.
    pub fn default_prompt() -> Result<JudgePrompt, JudgeError> {
        JudgePrompt::new(DEFAULT_JUDGE_PROMPT, "default")
    }

    /// Reads a template file.
    pub fn read(path: &std::path::Path) -> Result<JudgePrompt, JudgeError> {
        let text = std::fs::read_to_string(path).map_err(|e| JudgeError::Template {
            source_name: path.display().to_string(),
            message: format!("cannot be read: {e}"),
        })?;
        JudgePrompt::new(&text, &path.display().to_string())
    }

    /// Compiles `text`. A syntax error, or a variable other than the three, is refused
    /// here rather than at the first pair.
    pub fn new(text: &str, source_name: &str) -> Result<JudgePrompt, JudgeError> {
        let err = |message: String| JudgeError::Template {
            source_name: source_name.to_string(),
            message,
        };
        if text.trim().is_empty() {
            return Err(err("is empty".into()));
        }
        let prompt = JudgePrompt {
            text: text.to_string(),
            source_name: source_name.to_string(),
        };
        prompt.render("p", "a", "b").map_err(err)?;
        Ok(prompt)
    }

    /// The question for the judge: the template with the request and the two responses
    /// in the positions shown.
    pub fn render(
        &self,
        prompt: &str,
        response_a: &str,
        response_b: &str,
    ) -> Result<String, String> {
        // No HTML escaping (the template has no `.html` name); a variable other than the
        // three is an error, not an empty string.
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.render_str(
            &self.text,
            minijinja::context! { prompt, response_a, response_b },
        )
        .map_err(|e| e.to_string())
    }
}

/// The judge's answer to one question, as probabilities over the three answers (summing
/// to 1): the response shown first (`A`), the one shown second (`B`), or a tie.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Preference {
    pub first: f64,
    pub second: f64,
    pub tie: f64,
    /// The judge's next-token probability on the three answers together, before they
    /// were normalized.
    pub answer_mass: f64,
}

/// Which position a judge chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    First,
    Second,
    Tie,
}

impl Preference {
    /// The most probable answer; equal probabilities are a tie.
    pub fn choice(&self) -> Position {
        if self.first > self.second && self.first > self.tie {
            Position::First
        } else if self.second > self.first && self.second > self.tie {
            Position::Second
        } else {
            Position::Tie
        }
    }
}

/// Asks a judge one question.
pub trait JudgeScorer {
    /// The judge's probabilities of answering `A`, `B` or `tie` to `question`, the judge
    /// prompt as rendered.
    fn preference(&self, question: &str) -> Result<Preference, String>;
}

/// A loaded model as the judge: the question sent as a user turn through its chat
/// template, the answer read from the next-token probabilities.
pub struct ModelJudge<'a> {
    model: &'a Model,
    lora: Option<&'a LoraSet>,
    first: Vec<u32>,
    second: Vec<u32>,
    tie: Vec<u32>,
}

impl<'a> ModelJudge<'a> {
    /// The judge `model` (with `lora`, if any). Fails when the tokenizer cannot tell the
    /// three answers apart by their first token.
    pub fn new(model: &'a Model, lora: Option<&'a LoraSet>) -> Result<ModelJudge<'a>, JudgeError> {
        let err = |message: String| JudgeError::Answers {
            model: model.name.clone(),
            message,
        };
        let first_tokens = |words: &[&str]| -> Result<Vec<u32>, JudgeError> {
            let mut ids = Vec::new();
            for w in words {
                let enc = model
                    .tokenizer
                    .encode(w, false)
                    .map_err(|e| err(format!("tokenizing {w:?}: {e}")))?;
                if let Some(&id) = enc.first() {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            Ok(ids)
        };
        let mut first = first_tokens(&["A", " A"])?;
        let mut second = first_tokens(&["B", " B"])?;
        let mut tie = first_tokens(&["tie", " tie", "Tie", " Tie"])?;
        // A token that starts two answers tells them apart no better than nothing.
        let shared: Vec<u32> = first
            .iter()
            .chain(&second)
            .chain(&tie)
            .copied()
            .filter(|id| {
                [&first, &second, &tie]
                    .iter()
                    .filter(|set| set.contains(id))
                    .count()
                    > 1
            })
            .collect();
        for set in [&mut first, &mut second, &mut tie] {
            set.retain(|id| !shared.contains(id));
        }
        if first.is_empty() || second.is_empty() || tie.is_empty() {
            return Err(err(
                "its tokenizer gives `A`, `B` and `tie` no first tokens of their own".into(),
            ));
        }
        Ok(ModelJudge {
            model,
            lora,
            first,
            second,
            tie,
        })
    }
}

impl JudgeScorer for ModelJudge<'_> {
    fn preference(&self, question: &str) -> Result<Preference, String> {
        let ids = self
            .model
            .encode_chat(&[ChatMessage::new("user", question)], true)
            .map_err(|e| format!("applying the judge's chat template: {e}"))?;
        let logits = next_token_logits(self.model, self.lora, &ids)
            .map_err(|e| format!("running the judge: {e}"))?;
        preference_from_logits(&logits, &self.first, &self.second, &self.tie)
    }
}

/// The three answers' probabilities from next-token logits: a softmax over the whole
/// vocabulary, each answer's tokens summed, then normalized over the three.
pub fn preference_from_logits(
    logits: &[f32],
    first: &[u32],
    second: &[u32],
    tie: &[u32],
) -> Result<Preference, String> {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return Err("the judge's logits are not finite".into());
    }
    let z: f64 = logits
        .iter()
        .map(|&l| f64::from(l - max).exp())
        .filter(|p| p.is_finite())
        .sum();
    let p = |ids: &[u32]| -> f64 {
        ids.iter()
            .filter_map(|&i| logits.get(i as usize))
            .map(|&l| f64::from(l - max).exp() / z)
            .filter(|p| p.is_finite())
            .sum()
    };
    let (a, b, t) = (p(first), p(second), p(tie));
    let mass = a + b + t;
    if mass <= 0.0 || !mass.is_finite() {
        return Err("the judge gives the answers A, B and tie no probability".into());
    }
    Ok(Preference {
        first: a / mass,
        second: b / mass,
        tie: t / mass,
        answer_mass: mass,
    })
}

/// One pair to judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgePair {
    /// The request, as the judge sees it (the last user turn).
    pub prompt: String,
    pub reply_a: String,
    pub reply_b: String,
}

/// The verdict on a pair, both orders combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    AWins,
    BWins,
    Tie,
}

impl Verdict {
    /// A's verdict from the judge's choice with A shown first and with B shown first: a
    /// win in both orders is a win, anything else a tie.
    pub fn combine(a_first: Position, b_first: Position) -> Verdict {
        match (a_first, b_first) {
            (Position::First, Position::Second) => Verdict::AWins,
            (Position::Second, Position::First) => Verdict::BWins,
            _ => Verdict::Tie,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Verdict::AWins => "A wins",
            Verdict::BWins => "B wins",
            Verdict::Tie => "tie",
        }
    }
}

/// One pair's judgment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairVerdict {
    #[serde(flatten)]
    pub pair: JudgePair,
    /// The judge's answer with A's reply shown first (its `first` is A).
    pub a_first: Preference,
    /// The judge's answer with B's reply shown first (its `first` is B).
    pub b_first: Preference,
    pub verdict: Verdict,
}

/// A win rate's 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// Wilson's score interval at 95 % for a rate `p` observed over `n` trials.
pub fn wilson_interval(p: f64, n: usize) -> Interval {
    if n == 0 {
        return Interval {
            low: 0.0,
            high: 1.0,
        };
    }
    let n = n as f64;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Interval {
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
    }
}

/// What was compared, and by whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeLabels {
    /// A's model (and adapter), as the user named it.
    pub a: String,
    pub b: String,
    pub judge: String,
}

/// A whole judgment, as written to `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeResult {
    #[serde(flatten)]
    pub labels: JudgeLabels,
    /// The judge prompt's template text, as used.
    pub judge_prompt: String,
    /// Pairs A won in both orders.
    pub wins: usize,
    /// Pairs B won in both orders.
    pub losses: usize,
    pub ties: usize,
    /// `(wins + ties / 2) / pairs`.
    pub win_rate: f64,
    /// Wilson's 95 % interval of the win rate.
    pub interval: Interval,
    pub pairs: Vec<PairVerdict>,
}

impl JudgeResult {
    /// Counts the verdicts of `pairs`.
    pub fn new(labels: JudgeLabels, judge_prompt: String, pairs: Vec<PairVerdict>) -> JudgeResult {
        let count = |v: Verdict| pairs.iter().filter(|p| p.verdict == v).count();
        let (wins, losses, ties) = (
            count(Verdict::AWins),
            count(Verdict::BWins),
            count(Verdict::Tie),
        );
        let n = pairs.len();
        let win_rate = if n == 0 {
            0.0
        } else {
            (wins as f64 + ties as f64 / 2.0) / n as f64
        };
        JudgeResult {
            labels,
            judge_prompt,
            wins,
            losses,
            ties,
            win_rate,
            interval: wilson_interval(win_rate, n),
            pairs,
        }
    }

    /// One line: `A wins 3, loses 1, ties 2: win rate 66.7 % (95 % interval 30.0–90.3 %)`.
    pub fn summary(&self) -> String {
        format!(
            "A wins {}, loses {}, ties {}: win rate {:.1} % (95 % interval {:.1}–{:.1} %)",
            self.wins,
            self.losses,
            self.ties,
            self.win_rate * 100.0,
            self.interval.low * 100.0,
            self.interval.high * 100.0
        )
    }
}

/// Judges every pair twice (A's reply first, then B's) with `judge` through `prompt`.
/// `on_pair` is called after each pair with its index and verdict; `cancel` is checked
/// before each question.
pub fn judge_pairs(
    judge: &dyn JudgeScorer,
    prompt: &JudgePrompt,
    labels: JudgeLabels,
    pairs: &[JudgePair],
    cancel: &AtomicBool,
    on_pair: &mut dyn FnMut(usize, &PairVerdict),
) -> Result<JudgeResult, JudgeError> {
    if pairs.is_empty() {
        return Err(JudgeError::Empty);
    }
    let mut verdicts = Vec::with_capacity(pairs.len());
    for (index, pair) in pairs.iter().enumerate() {
        let fail = |message: String| JudgeError::Pair {
            index: index + 1,
            prompt: pair.prompt.chars().take(60).collect(),
            message,
        };
        let ask = |first: &str, second: &str| -> Result<Preference, JudgeError> {
            if cancel.load(Ordering::Relaxed) {
                return Err(JudgeError::Cancelled);
            }
            let question = prompt
                .render(&pair.prompt, first, second)
                .map_err(|e| fail(format!("rendering the judge prompt: {e}")))?;
            judge.preference(&question).map_err(fail)
        };
        let a_first = ask(&pair.reply_a, &pair.reply_b)?;
        let b_first = ask(&pair.reply_b, &pair.reply_a)?;
        let v = PairVerdict {
            pair: pair.clone(),
            a_first,
            b_first,
            verdict: Verdict::combine(a_first.choice(), b_first.choice()),
        };
        on_pair(index, &v);
        verdicts.push(v);
    }
    Ok(JudgeResult::new(labels, prompt.text.clone(), verdicts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> JudgeLabels {
        JudgeLabels {
            a: "base".into(),
            b: "base + adapter".into(),
            judge: "judge".into(),
        }
    }

    fn pairs(n: usize) -> Vec<JudgePair> {
        (0..n)
            .map(|i| JudgePair {
                prompt: format!("prompt {i}"),
                reply_a: format!("good answer {i}"),
                reply_b: format!("bad answer {i}"),
            })
            .collect()
    }

    fn pref(first: f64, second: f64, tie: f64) -> Preference {
        Preference {
            first,
            second,
            tie,
            answer_mass: 1.0,
        }
    }

    /// Always prefers the response shown first, whatever it says.
    struct FirstPosition;
    impl JudgeScorer for FirstPosition {
        fn preference(&self, _: &str) -> Result<Preference, String> {
            Ok(pref(0.9, 0.05, 0.05))
        }
    }

    /// Prefers the response shown first only when it is a good one: reads the rendered
    /// question, so it also checks the order the responses were put in.
    struct ReadsTheQuestion;
    impl JudgeScorer for ReadsTheQuestion {
        fn preference(&self, q: &str) -> Result<Preference, String> {
            let a = q.find("good answer").ok_or("no good answer shown")?;
            let b = q.find("bad answer").ok_or("no bad answer shown")?;
            Ok(if a < b {
                pref(0.7, 0.2, 0.1)
            } else {
                pref(0.2, 0.7, 0.1)
            })
        }
    }

    #[test]
    fn a_judge_that_always_prefers_the_first_position_gives_ties() {
        let prompt = JudgePrompt::default_prompt().expect("default prompt");
        let cancel = AtomicBool::new(false);
        let r = judge_pairs(
            &FirstPosition,
            &prompt,
            labels(),
            &pairs(6),
            &cancel,
            &mut |_, _| {},
        )
        .expect("judged");
        assert_eq!((r.wins, r.losses, r.ties), (0, 0, 6));
        assert_eq!(r.win_rate, 0.5);
        assert!(r.pairs.iter().all(|p| p.verdict == Verdict::Tie));
    }

    #[test]
    fn a_consistent_preference_wins_in_both_orders() {
        let prompt = JudgePrompt::default_prompt().expect("default prompt");
        let cancel = AtomicBool::new(false);
        let mut seen = Vec::new();
        let r = judge_pairs(
            &ReadsTheQuestion,
            &prompt,
            labels(),
            &pairs(4),
            &cancel,
            &mut |i, v| seen.push((i, v.verdict)),
        )
        .expect("judged");
        assert_eq!((r.wins, r.losses, r.ties), (4, 0, 0));
        assert_eq!(r.win_rate, 1.0);
        assert_eq!(
            seen,
            (0..4).map(|i| (i, Verdict::AWins)).collect::<Vec<_>>()
        );
        assert_eq!(r.pairs[0].a_first.choice(), Position::First);
        assert_eq!(r.pairs[0].b_first.choice(), Position::Second);
        // Swapped: B's replies are the good ones.
        let swapped: Vec<JudgePair> = pairs(4)
            .into_iter()
            .map(|p| JudgePair {
                reply_a: p.reply_b,
                reply_b: p.reply_a,
                ..p
            })
            .collect();
        let r = judge_pairs(
            &ReadsTheQuestion,
            &prompt,
            labels(),
            &swapped,
            &cancel,
            &mut |_, _| {},
        )
        .expect("judged");
        assert_eq!((r.wins, r.losses, r.ties), (0, 4, 0));
        assert_eq!(r.win_rate, 0.0);
    }

    #[test]
    fn verdicts_combine_both_orders() {
        use Position::*;
        assert_eq!(Verdict::combine(First, Second), Verdict::AWins);
        assert_eq!(Verdict::combine(Second, First), Verdict::BWins);
        assert_eq!(Verdict::combine(First, First), Verdict::Tie);
        assert_eq!(Verdict::combine(Second, Second), Verdict::Tie);
        assert_eq!(Verdict::combine(First, Tie), Verdict::Tie);
        assert_eq!(Verdict::combine(Tie, Tie), Verdict::Tie);
    }

    #[test]
    fn a_cancelled_judgment_stops() {
        let prompt = JudgePrompt::default_prompt().expect("default prompt");
        let cancel = AtomicBool::new(true);
        let e = judge_pairs(
            &FirstPosition,
            &prompt,
            labels(),
            &pairs(2),
            &cancel,
            &mut |_, _| {},
        );
        assert!(matches!(e, Err(JudgeError::Cancelled)));
        let e = judge_pairs(
            &FirstPosition,
            &prompt,
            labels(),
            &[],
            &cancel,
            &mut |_, _| {},
        );
        assert!(matches!(e, Err(JudgeError::Empty)));
    }

    #[test]
    fn the_wilson_interval_matches_known_values() {
        let close = |i: Interval, lo: f64, hi: f64| {
            assert!(
                (i.low - lo).abs() < 1e-9 && (i.high - hi).abs() < 1e-9,
                "{i:?}"
            );
        };
        // 8 of 10: 0.4902 to 0.9433 (Wilson 1927; as in statsmodels' proportion_confint).
        close(
            wilson_interval(0.8, 10),
            0.490_162_471_536_641_8,
            0.943_317_848_545_624_8,
        );
        close(
            wilson_interval(0.5, 10),
            0.236_593_090_512_564,
            0.763_406_909_487_436_1,
        );
        close(wilson_interval(0.0, 5), 0.0, 0.434_482_464_783_173_17);
        close(wilson_interval(1.0, 20), 0.838_874_841_947_180_6, 1.0);
        close(
            wilson_interval(0.55, 100),
            0.452_446_029_974_421_35,
            0.643_854_620_204_880_3,
        );
        close(wilson_interval(0.3, 0), 0.0, 1.0);
        // Ties count half: 2 wins, 1 loss, 2 ties of 5 is a rate of 0.6.
        let v = |verdict| PairVerdict {
            pair: pairs(1).remove(0),
            a_first: pref(1.0, 0.0, 0.0),
            b_first: pref(0.0, 1.0, 0.0),
            verdict,
        };
        let r = JudgeResult::new(
            labels(),
            "t".into(),
            vec![
                v(Verdict::AWins),
                v(Verdict::AWins),
                v(Verdict::BWins),
                v(Verdict::Tie),
                v(Verdict::Tie),
            ],
        );
        assert_eq!((r.wins, r.losses, r.ties), (2, 1, 2));
        assert!((r.win_rate - 0.6).abs() < 1e-12);
        assert_eq!(r.interval, wilson_interval(0.6, 5));
        assert_eq!(
            r.summary(),
            format!(
                "A wins 2, loses 1, ties 2: win rate 60.0 % (95 % interval {:.1}–{:.1} %)",
                r.interval.low * 100.0,
                r.interval.high * 100.0
            )
        );
    }

    #[test]
    fn the_template_renders_the_request_and_both_responses() {
        let p = JudgePrompt::default_prompt().expect("default prompt");
        let q = p.render("What is 2+2?", "4", "five <b>").expect("render");
        let (pa, pb) = (
            q.find("[Response A]\n4").expect("A"),
            q.find("[Response B]\nfive <b>").expect("B, unescaped"),
        );
        assert!(q.contains("[Request]\nWhat is 2+2?"));
        assert!(pa < pb);
        let custom = JudgePrompt::new(
            "Q: {{ prompt }} / {{ response_b }} vs {{ response_a }}",
            "custom",
        )
        .expect("custom");
        assert_eq!(
            custom.render("p", "x", "y").expect("render"),
            "Q: p / y vs x"
        );
        // A syntax error and an unknown variable are refused, naming the prompt.
        let e = JudgePrompt::new("{{ prompt ", "broken.jinja").expect_err("syntax");
        assert!(e.to_string().contains("broken.jinja"), "{e}");
        let e = JudgePrompt::new("{{ answer }}", "typo.jinja").expect_err("unknown variable");
        assert!(e.to_string().contains("typo.jinja"), "{e}");
        assert!(JudgePrompt::new("  \n", "blank").is_err());
    }

    #[test]
    fn answer_probabilities_come_from_the_logits() {
        // Vocabulary of 5: ids 1 and 2 start A, 3 starts B, 4 starts tie.
        let logits = [0.0f32, 1.0, 1.0, 2.0, 0.0];
        let p = preference_from_logits(&logits, &[1, 2], &[3], &[4]).expect("preference");
        let e = |x: f64| x.exp();
        let z = e(0.0) * 2.0 + e(1.0) * 2.0 + e(2.0);
        let (a, b, t) = (2.0 * e(1.0) / z, e(2.0) / z, e(0.0) / z);
        assert!((p.answer_mass - (a + b + t)).abs() < 1e-9);
        assert!((p.first - a / (a + b + t)).abs() < 1e-9);
        assert!((p.second - b / (a + b + t)).abs() < 1e-9);
        assert!((p.first + p.second + p.tie - 1.0).abs() < 1e-12);
        // One B token of a higher logit outweighs two A tokens: e² against 2e.
        assert_eq!(p.choice(), Position::Second);
        assert!(preference_from_logits(&[f32::NAN; 3], &[0], &[1], &[2]).is_err());
    }

    #[test]
    fn the_result_round_trips_through_json() {
        let prompt = JudgePrompt::default_prompt().expect("default prompt");
        let cancel = AtomicBool::new(false);
        let r = judge_pairs(
            &ReadsTheQuestion,
            &prompt,
            labels(),
            &pairs(3),
            &cancel,
            &mut |_, _| {},
        )
        .expect("judged");
        let json = serde_json::to_string_pretty(&r).expect("json");
        let v: serde_json::Value = serde_json::from_str(&json).expect("value");
        assert_eq!(v["judge_prompt"], DEFAULT_JUDGE_PROMPT);
        assert_eq!(v["a"], "base");
        assert_eq!(v["pairs"][0]["verdict"], "a_wins");
        assert_eq!(v["pairs"][0]["reply_a"], "good answer 0");
        let back: JudgeResult = serde_json::from_str(&json).expect("parse back");
        assert_eq!(back, r);
    }
}
