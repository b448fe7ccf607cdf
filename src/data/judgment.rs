//! Preference pairs made from generated replies: who wrote each reply and with which
//! settings (`ReplySource`, [`pair_meta`]: the metadata fields every generated pair
//! carries, whether `dataset pairs` or the Chat tab's blind A/B made it), the blind A/B
//! judgment (`Verdict`, `Judgment` and the pairs it makes), the per-prompt shuffle of
//! the two sides, and the bytes of a preference file with a judgment's pairs appended or
//! removed (the writes themselves go through `fsio`, on the caller's job).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::DataError;
use super::formats::Encoding;
use super::preference::{PreferencePair, PreferenceSet};
use super::preference_formats::{PreferenceFormat, PreferenceLayout};
use super::record::{Message, Role};

/// The model (and adapter) that wrote a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplySource {
    /// The model's name as the studio shows it (`Base + run`, a model file's name), or
    /// where a reply not generated came from (`dataset identity.json`, `edited by hand`).
    pub model: String,
    /// The adapter folder, when one was applied.
    pub adapter: Option<String>,
}

impl ReplySource {
    pub fn new(model: impl Into<String>, adapter: Option<String>) -> Self {
        ReplySource {
            model: model.into(),
            adapter,
        }
    }
}

/// The metadata fields of a generated pair, which the preference readers keep as
/// unread fields: `models` and `adapters` (each `{chosen, rejected}`), `sampling` (the
/// sampler's settings and `max_new_tokens`) and `seed`.
pub fn pair_meta(
    chosen: &ReplySource,
    rejected: &ReplySource,
    sampling: &Value,
    seed: u64,
) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert(
        "models".into(),
        json!({"chosen": chosen.model, "rejected": rejected.model}),
    );
    meta.insert(
        "adapters".into(),
        json!({"chosen": chosen.adapter, "rejected": rejected.adapter}),
    );
    meta.insert("sampling".into(), sampling.clone());
    meta.insert("seed".into(), json!(seed));
    meta
}

/// A one-turn-reply pair with `meta`.
pub fn reply_pair(
    system: Option<String>,
    prompt: Vec<Message>,
    chosen: &str,
    rejected: &str,
    meta: Map<String, Value>,
) -> PreferencePair {
    PreferencePair {
        system,
        prompt,
        chosen: vec![Message::new(Role::Assistant, chosen)],
        rejected: vec![Message::new(Role::Assistant, rejected)],
        meta,
    }
}

/// What the user said about the two replies shown as A and B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    A,
    B,
    Tie,
    BothBad,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::A => "A is better",
            Verdict::B => "B is better",
            Verdict::Tie => "Tie",
            Verdict::BothBad => "Both bad",
        }
    }
}

/// Whether the sides swap for prompt `index` of a session shuffled with `order_seed`:
/// one bit of SplitMix64, so the order is reproducible from the recorded seed and index.
pub fn shown_swapped(order_seed: u64, index: u64) -> bool {
    let mut z = order_seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z & 1 == 1
}

/// One blind A/B judgment: the conversation, the two replies as shown, who wrote them,
/// the verdict and the user's edit of the better reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgment {
    /// Names the judgment's records in the file (undo removes them by it).
    pub id: String,
    pub system: Option<String>,
    /// The conversation so far, ending with the prompt both replies answer.
    pub prompt: Vec<Message>,
    /// The replies as shown: A (left), then B (right).
    pub replies: [String; 2],
    /// Who wrote A and B.
    pub sources: [ReplySource; 2],
    pub verdict: Verdict,
    /// The chosen reply as the user edited it; `None` keeps the reply as generated.
    pub edited: Option<String>,
    /// The sampler's settings and `max_new_tokens`, as JSON.
    pub sampling: Value,
    /// The sampling seed of both replies.
    pub seed: u64,
    /// The session's shuffle seed, the prompt's index and whether its sides were swapped.
    pub order_seed: u64,
    pub prompt_index: u64,
    pub swapped: bool,
}

impl Judgment {
    /// The reply kept as chosen: the edit when it is not blank, else the better reply as
    /// generated (none for a tie or "both bad" without an edit).
    pub fn chosen_text(&self) -> Option<&str> {
        let edit = self
            .edited
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        let better = match self.verdict {
            Verdict::A => self.replies[0].as_str(),
            Verdict::B => self.replies[1].as_str(),
            Verdict::Tie | Verdict::BothBad => return edit,
        };
        // An edit that only trims the reply keeps the reply as generated.
        Some(match edit {
            Some(e) if e != better.trim() => e,
            _ => better,
        })
    }

    /// The pairs this judgment makes. A or B: the better reply (as edited) chosen, the
    /// other rejected. A tie or "both bad": none, unless the user wrote a reply, which is
    /// then chosen over each of the two. A pair whose replies are the same, or with a
    /// blank reply, is left out.
    pub fn pairs(&self) -> Vec<PreferencePair> {
        let Some(chosen) = self.chosen_text().filter(|c| !c.trim().is_empty()) else {
            return Vec::new();
        };
        let edited = match self.verdict {
            Verdict::A => chosen != self.replies[0],
            Verdict::B => chosen != self.replies[1],
            Verdict::Tie | Verdict::BothBad => true,
        };
        let rejected_sides: &[usize] = match self.verdict {
            Verdict::A => &[1],
            Verdict::B => &[0],
            Verdict::Tie | Verdict::BothBad => &[0, 1],
        };
        let by_hand = ReplySource::new("edited by hand", None);
        let mut out = Vec::new();
        for &r in rejected_sides {
            let rejected = &self.replies[r];
            // A blank reply or the chosen one again teaches nothing.
            if rejected.trim().is_empty() || rejected.trim() == chosen.trim() {
                continue;
            }
            let chosen_source = match self.verdict {
                Verdict::A if !edited => &self.sources[0],
                Verdict::B if !edited => &self.sources[1],
                _ => &by_hand,
            };
            let mut meta = pair_meta(chosen_source, &self.sources[r], &self.sampling, self.seed);
            let mut judgment = json!({
                "id": self.id,
                "verdict": self.verdict,
                "edited": edited,
                "order_seed": self.order_seed,
                "prompt_index": self.prompt_index,
                "swapped": self.swapped,
                "a": self.sources[0],
                "b": self.sources[1],
            });
            if edited {
                let original = match self.verdict {
                    Verdict::A => Some(&self.replies[0]),
                    Verdict::B => Some(&self.replies[1]),
                    _ => None,
                };
                judgment["original"] = json!(original);
            }
            meta.insert("judgment".into(), judgment);
            out.push(reply_pair(
                self.system.clone(),
                self.prompt.clone(),
                chosen,
                rejected,
                meta,
            ));
        }
        out
    }
}

/// The judgment id a pair carries (`judgment.id`), if any.
pub fn judgment_id(pair: &PreferencePair) -> Option<&str> {
    pair.meta.get("judgment")?.get("id")?.as_str()
}

/// The format a new preference file at `path` is written in: TRL's message layout, as a
/// JSON array for `.json`, else JSON lines.
pub fn format_for_path(path: &Path) -> PreferenceFormat {
    let encoding = match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("json") => Encoding::Json,
        _ => Encoding::JsonLines,
    };
    PreferenceFormat::new(PreferenceLayout::TrlConversational, encoding)
}

/// The preference file at `path` (empty in `format_for_path` when it does not exist or
/// is empty).
fn read_or_new(path: &Path) -> Result<PreferenceSet, DataError> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => PreferenceSet::load(path),
        Ok(_) => Ok(PreferenceSet::new(format_for_path(path))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(PreferenceSet::new(format_for_path(path)))
        }
        Err(e) => Err(DataError::io(path, e)),
    }
}

/// The bytes of the preference file at `path` with `pairs` appended, in the file's own
/// layout (a new file: [`format_for_path`]).
pub fn appended_bytes(path: &Path, pairs: &[PreferencePair]) -> Result<Vec<u8>, DataError> {
    let mut set = read_or_new(path)?;
    set.pairs.extend(pairs.iter().cloned());
    set.to_bytes(None)
}

/// The bytes of the preference file at `path` without the pairs of judgment `id`; an
/// error naming the file when it holds none.
pub fn removed_bytes(path: &Path, id: &str) -> Result<Vec<u8>, DataError> {
    let mut set = read_or_new(path)?;
    let before = set.pairs.len();
    set.pairs.retain(|p| judgment_id(p) != Some(id));
    if set.pairs.len() == before {
        return Err(DataError::Other(format!(
            "{}: no record of judgment {id} (was the file changed elsewhere?)",
            path.display()
        )));
    }
    set.to_bytes(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judgment(verdict: Verdict, edited: Option<&str>) -> Judgment {
        Judgment {
            id: "s-1".into(),
            system: Some("Be brief.".into()),
            prompt: vec![Message::new(Role::User, "Who are you?")],
            replies: ["I am A.".into(), "I am B.".into()],
            sources: [
                ReplySource::new("Base + identity", Some("/runs/identity/adapter".into())),
                ReplySource::new("Base model", None),
            ],
            verdict,
            edited: edited.map(String::from),
            sampling: json!({"temperature": 0.7, "max_new_tokens": 64}),
            seed: 42,
            order_seed: 7,
            prompt_index: 1,
            swapped: false,
        }
    }

    #[test]
    fn a_or_b_makes_one_pair_with_who_wrote_it() {
        let p = judgment(Verdict::B, None).pairs();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].chosen[0].content, "I am B.");
        assert_eq!(p[0].rejected[0].content, "I am A.");
        assert_eq!(p[0].meta["models"]["chosen"], "Base model");
        assert_eq!(p[0].meta["adapters"]["rejected"], "/runs/identity/adapter");
        assert_eq!(p[0].meta["seed"], 42);
        assert_eq!(p[0].meta["judgment"]["edited"], false);
        assert_eq!(p[0].system.as_deref(), Some("Be brief."));
    }

    #[test]
    fn an_edit_becomes_the_chosen_reply() {
        let p = judgment(Verdict::A, Some("I am the identity model.")).pairs();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].chosen[0].content, "I am the identity model.");
        assert_eq!(p[0].meta["models"]["chosen"], "edited by hand");
        assert_eq!(p[0].meta["judgment"]["original"], "I am A.");
        // A blank edit keeps the reply as generated.
        assert_eq!(
            judgment(Verdict::A, Some("  ")).pairs()[0].chosen[0].content,
            "I am A."
        );
    }

    #[test]
    fn ties_and_both_bad_make_pairs_only_with_an_edit() {
        assert!(judgment(Verdict::Tie, None).pairs().is_empty());
        assert!(judgment(Verdict::BothBad, None).pairs().is_empty());
        let p = judgment(Verdict::BothBad, Some("Better.")).pairs();
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|x| x.chosen[0].content == "Better."));
        assert_eq!(p[0].rejected[0].content, "I am A.");
        assert_eq!(p[1].rejected[0].content, "I am B.");
        // An "edit" equal to one side only makes the pair against the other.
        let p = judgment(Verdict::Tie, Some("I am A.")).pairs();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].rejected[0].content, "I am B.");
    }

    #[test]
    fn the_shuffle_is_reproducible_and_mixes() {
        let order: Vec<bool> = (0..64).map(|i| shown_swapped(99, i)).collect();
        assert_eq!(
            order,
            (0..64).map(|i| shown_swapped(99, i)).collect::<Vec<_>>()
        );
        let swapped = order.iter().filter(|&&s| s).count();
        assert!((16..=48).contains(&swapped), "{swapped} of 64 swapped");
        assert_ne!(
            order,
            (0..64).map(|i| shown_swapped(100, i)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn appended_and_removed_pairs_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ab.jsonl");
        let first = judgment(Verdict::A, None).pairs();
        std::fs::write(&path, appended_bytes(&path, &first).unwrap()).unwrap();
        let mut second = judgment(Verdict::BothBad, Some("Better.")).pairs();
        for p in &mut second {
            p.meta["judgment"]["id"] = json!("s-2");
        }
        std::fs::write(&path, appended_bytes(&path, &second).unwrap()).unwrap();
        let set = PreferenceSet::load(&path).unwrap();
        assert_eq!(set.format().layout, PreferenceLayout::TrlConversational);
        assert_eq!(set.len(), 3);
        assert_eq!(set.pairs[0], first[0]);
        assert!(set.problems().is_empty(), "{:?}", set.problems());
        std::fs::write(&path, removed_bytes(&path, "s-2").unwrap()).unwrap();
        let set = PreferenceSet::load(&path).unwrap();
        assert_eq!(set.pairs, first);
        let err = removed_bytes(&path, "s-9").unwrap_err().to_string();
        assert!(err.contains("ab.jsonl") && err.contains("s-9"), "{err}");
    }
}
