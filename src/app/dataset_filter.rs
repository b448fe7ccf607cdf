//! Which rows the Datasets table shows: a search (substring or regular expression, run on
//! the worker) intersected with a flag filter (duplicate, too long, empty, invalid) taken
//! from the latest analysis, or the records the latest contamination check flagged.

use crate::data::search;
use crate::worker::{Analysis, Command, Worker};

use super::dataset_doc::OpenDataset;

/// A flag filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlagFilter {
    #[default]
    All,
    Duplicate,
    TooLong,
    Empty,
    Invalid,
    /// Flagged by the contamination check (not part of the analysis).
    Contaminated,
}

impl FlagFilter {
    pub const ALL: [FlagFilter; 6] = [
        FlagFilter::All,
        FlagFilter::Duplicate,
        FlagFilter::TooLong,
        FlagFilter::Empty,
        FlagFilter::Invalid,
        FlagFilter::Contaminated,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FlagFilter::All => "All",
            FlagFilter::Duplicate => "Duplicate",
            FlagFilter::TooLong => "Too long",
            FlagFilter::Empty => "Empty",
            FlagFilter::Invalid => "Invalid",
            FlagFilter::Contaminated => "Contaminated",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            FlagFilter::All => "Every record",
            FlagFilter::Duplicate => "Records that repeat an earlier record exactly",
            FlagFilter::TooLong => {
                "Records longer than the maximum sequence length of the run (they get truncated)"
            }
            FlagFilter::Empty => "Records with an empty turn or system prompt",
            FlagFilter::Invalid => "Records with at least one validation error",
            FlagFilter::Contaminated => {
                "Records sharing a run of 13 words with the set of the last contamination check"
            }
        }
    }

    /// The rows with this flag in an analysis (`None` for `All`, and for `Contaminated`,
    /// which the contamination check answers).
    pub fn rows(self, a: &Analysis) -> Option<&[usize]> {
        match self {
            FlagFilter::All | FlagFilter::Contaminated => None,
            FlagFilter::Duplicate => Some(&a.duplicates),
            FlagFilter::TooLong => Some(&a.too_long),
            FlagFilter::Empty => Some(&a.empty),
            FlagFilter::Invalid => Some(&a.invalid),
        }
    }
}

/// What was last asked of the worker.
#[derive(Debug, Clone, PartialEq)]
struct SearchKey {
    text: String,
    regex: bool,
    case_sensitive: bool,
    generation: u64,
}

/// The search box, the flag filter, and the rows they leave.
#[derive(Debug, Default)]
pub struct Filter {
    pub text: String,
    pub regex: bool,
    pub case_sensitive: bool,
    pub flag: FlagFilter,
    sent: Option<SearchKey>,
    next_id: u64,
    /// Matching rows of the latest answered search.
    result: Option<Vec<usize>>,
    pub error: Option<String>,
    pub searching: bool,
    /// The records of the latest contamination check, and a count of the answers taken.
    contaminated: (u64, Vec<usize>),
    /// The rows shown (`None`: every row).
    view: Option<Vec<usize>>,
    view_key: Option<(u64, FlagFilter, u64, usize, u64)>,
}

impl Filter {
    /// Sends a search when the query or the records changed.
    pub fn update(&mut self, doc: &OpenDataset, worker: &Worker) {
        if self.text.is_empty() {
            if self.sent.take().is_some() {
                self.result = None;
                self.error = None;
                self.searching = false;
                self.view_key = None;
            }
        } else {
            let key = SearchKey {
                text: self.text.clone(),
                regex: self.regex,
                case_sensitive: self.case_sensitive,
                generation: doc.generation(),
            };
            if self.sent.as_ref() != Some(&key) {
                self.next_id += 1;
                self.searching = true;
                worker.send(Command::Search {
                    dataset: doc.snapshot(),
                    query: key.text.clone(),
                    regex: key.regex,
                    case_sensitive: key.case_sensitive,
                    id: self.next_id,
                });
                self.sent = Some(key);
            }
        }
        let analysis_gen = doc.analysis.as_ref().map_or(0, |(g, _)| *g);
        let key = (
            self.next_id,
            self.flag,
            analysis_gen,
            doc.data().len(),
            self.contaminated.0,
        );
        if self.view_key != Some(key) {
            self.view = self.compute_view(doc);
            self.view_key = Some(key);
        }
    }

    /// Takes the records a contamination check flagged.
    pub fn set_contaminated(&mut self, rows: Vec<usize>) {
        self.contaminated = (self.contaminated.0 + 1, rows);
    }

    /// How many records the latest contamination check flagged, when one answered.
    pub fn contaminated_count(&self) -> Option<usize> {
        (self.contaminated.0 > 0).then_some(self.contaminated.1.len())
    }

    /// Takes a search answer; stale answers are dropped.
    pub fn searched(&mut self, id: u64, rows: Result<Vec<usize>, String>) {
        if id != self.next_id {
            return;
        }
        self.searching = false;
        match rows {
            Ok(r) => {
                self.result = Some(r);
                self.error = None;
            }
            Err(e) => {
                self.result = None;
                self.error = Some(e);
            }
        }
        self.view_key = None;
    }

    /// The search job failed: the query stays, with the error shown in place of matches.
    pub fn search_failed(&mut self, error: String) {
        self.searching = false;
        self.result = None;
        self.error = Some(error);
        self.view_key = None;
    }

    /// How many rows the search matched, when one is active.
    pub fn match_count(&self) -> Option<usize> {
        if self.text.is_empty() {
            None
        } else {
            self.result.as_ref().map(Vec::len)
        }
    }

    fn compute_view(&self, doc: &OpenDataset) -> Option<Vec<usize>> {
        let n = doc.data().len();
        let flag_rows = match self.flag {
            FlagFilter::Contaminated => Some(self.contaminated.1.as_slice()),
            flag => doc.latest_analysis().and_then(|a| flag.rows(a)),
        }
        .map(|r| r.iter().copied().filter(|&i| i < n).collect::<Vec<_>>());
        let search_rows = if self.text.is_empty() {
            None
        } else {
            Some(self.result.clone().unwrap_or_default())
        };
        match (flag_rows, search_rows) {
            (None, None) => None,
            (Some(f), None) => Some(f),
            (None, Some(s)) => Some(s.into_iter().filter(|&i| i < n).collect()),
            (Some(f), Some(s)) => Some(search::intersect(&f, &s)),
        }
    }

    /// The rows shown.
    pub fn rows(&self, doc: &OpenDataset) -> Rows<'_> {
        match &self.view {
            Some(v) => Rows::List(v),
            None => Rows::All(doc.data().len()),
        }
    }

    /// Forgets the view (after the dataset was replaced).
    pub fn reset(&mut self) {
        self.contaminated = (0, Vec::new());
        self.sent = None;
        self.result = None;
        self.error = None;
        self.view = None;
        self.view_key = None;
        self.searching = false;
    }
}

/// The shown rows, without copying `0..n` when nothing filters.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    All(usize),
    /// Records in ascending order.
    List(&'a [usize]),
    /// Records in any order (sorted by a score).
    Ordered(&'a [usize]),
}

impl Rows<'_> {
    pub fn len(&self) -> usize {
        match self {
            Rows::All(n) => *n,
            Rows::List(v) | Rows::Ordered(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record shown at table position `i`.
    pub fn get(&self, i: usize) -> Option<usize> {
        match self {
            Rows::All(n) => (i < *n).then_some(i),
            Rows::List(v) | Rows::Ordered(v) => v.get(i).copied(),
        }
    }

    /// The table position of record `record`, if shown.
    pub fn position(&self, record: usize) -> Option<usize> {
        match self {
            Rows::All(n) => (record < *n).then_some(record),
            Rows::List(v) => v.binary_search(&record).ok(),
            Rows::Ordered(v) => v.iter().position(|&r| r == record),
        }
    }
}
