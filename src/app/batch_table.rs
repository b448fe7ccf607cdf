//! The batch-compare table as data: its prompts (typed one per line, or the open dataset's
//! eval split with the reference reply of each record), one column per chat pane, the
//! replies as the batch job reports them, and the table written as JSONL or CSV. Nothing
//! here draws or starts threads, so it is tested without a window.

use serde_json::{json, Value};

use crate::data::{Dataset, Message, Role};
use crate::infer::{Sampling, StopReason};
use crate::model::ChatMessage;
use crate::train::RunConfig;
use crate::worker::batch_job::{BatchEvent, BatchReply};

/// One reply of the table.
#[derive(Debug, Clone)]
pub enum Cell {
    /// Not generated (yet, or the batch was stopped before it).
    Waiting,
    Running,
    Done(BatchReply),
    Failed(String),
}

/// One prompt and its replies.
#[derive(Debug, Clone)]
pub struct BatchRow {
    /// The dataset record the prompt came from.
    pub record: Option<usize>,
    pub system: Option<String>,
    /// Turns before the prompt (for multi-turn records), oldest first.
    pub history: Vec<Message>,
    pub prompt: String,
    /// The dataset's own reply to the prompt.
    pub reference: Option<String>,
    /// One per column.
    pub cells: Vec<Cell>,
}

impl BatchRow {
    fn new(prompt: String, system: &str) -> Self {
        BatchRow {
            record: None,
            system: Some(system.trim().to_string()).filter(|s| !s.is_empty()),
            history: Vec::new(),
            prompt,
            reference: None,
            cells: Vec::new(),
        }
    }

    /// The conversation sent to the model: system, earlier turns, the prompt.
    pub fn messages(&self) -> Vec<ChatMessage> {
        let mut out = Vec::with_capacity(self.history.len() + 2);
        if let Some(s) = &self.system {
            out.push(ChatMessage::new("system", s.as_str()));
        }
        out.extend(
            self.history
                .iter()
                .map(|m| ChatMessage::new(m.role.as_str(), m.content.as_str())),
        );
        out.push(ChatMessage::new("user", self.prompt.as_str()));
        out
    }

    /// The reply of `column`, when it has finished.
    pub fn reply(&self, column: usize) -> Option<&BatchReply> {
        match self.cells.get(column) {
            Some(Cell::Done(r)) => Some(r),
            _ => None,
        }
    }
}

/// What a column generated with.
#[derive(Debug, Clone)]
pub struct TableColumn {
    /// The pane's label ("Base model", "Base + run-name").
    pub label: String,
    /// The adapter folder, when the pane used one.
    pub adapter: Option<String>,
}

/// The prompts, the columns and the replies.
#[derive(Debug, Clone)]
pub struct BatchTable {
    pub columns: Vec<TableColumn>,
    pub rows: Vec<BatchRow>,
    pub sampling: Sampling,
    pub max_new_tokens: usize,
}

impl BatchTable {
    /// A table waiting for every reply.
    pub fn new(
        columns: Vec<TableColumn>,
        mut rows: Vec<BatchRow>,
        sampling: Sampling,
        max_new_tokens: usize,
    ) -> Self {
        for r in &mut rows {
            r.cells = vec![Cell::Waiting; columns.len()];
        }
        BatchTable {
            columns,
            rows,
            sampling,
            max_new_tokens,
        }
    }

    /// Replies finished or failed, and replies in all.
    pub fn progress(&self) -> (usize, usize) {
        let done = self
            .rows
            .iter()
            .flat_map(|r| &r.cells)
            .filter(|c| matches!(c, Cell::Done(_) | Cell::Failed(_)))
            .count();
        (done, self.rows.len() * self.columns.len())
    }

    pub fn has_references(&self) -> bool {
        self.rows.iter().any(|r| r.reference.is_some())
    }

    /// Takes one event of the batch job. Returns the column that finished, if one did.
    pub fn apply(&mut self, event: BatchEvent) -> Option<usize> {
        let mut set = |row: usize, column: usize, cell: Cell| {
            if let Some(c) = self.rows.get_mut(row).and_then(|r| r.cells.get_mut(column)) {
                *c = cell;
            }
        };
        match event {
            BatchEvent::Started { row, column } => set(row, column, Cell::Running),
            BatchEvent::Reply { row, column, reply } => set(row, column, Cell::Done(reply)),
            BatchEvent::Failed {
                row: Some(row),
                column,
                error,
            } => set(row, column, Cell::Failed(error)),
            BatchEvent::Failed {
                row: None,
                column,
                error,
            } => {
                for r in &mut self.rows {
                    if let Some(c) = r.cells.get_mut(column) {
                        *c = Cell::Failed(error.clone());
                    }
                }
            }
            BatchEvent::ColumnDone { column } => {
                // A stopped column's reply in progress is not coming.
                for r in &mut self.rows {
                    if let Some(c @ Cell::Running) = r.cells.get_mut(column) {
                        *c = Cell::Waiting;
                    }
                }
                return Some(column);
            }
        }
        None
    }

    /// One JSON object per prompt, one line each.
    pub fn to_jsonl(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for row in &self.rows {
            serde_json::to_writer(&mut out, &self.row_json(row)).map_err(|e| e.to_string())?;
            out.push(b'\n');
        }
        Ok(out)
    }

    fn row_json(&self, row: &BatchRow) -> Value {
        let mut obj = serde_json::Map::new();
        if let Some(i) = row.record {
            obj.insert("record".into(), json!(i));
        }
        if let Some(s) = &row.system {
            obj.insert("system".into(), json!(s));
        }
        if !row.history.is_empty() {
            obj.insert("history".into(), json!(row.history));
        }
        obj.insert("prompt".into(), json!(row.prompt));
        if let Some(r) = &row.reference {
            obj.insert("reference".into(), json!(r));
        }
        let replies: Vec<Value> = self
            .columns
            .iter()
            .zip(&row.cells)
            .map(|(col, cell)| {
                let mut r = json!({ "model": col.label, "adapter": col.adapter });
                match cell {
                    Cell::Done(reply) => {
                        r["text"] = json!(reply.text);
                        r["stop_reason"] = json!(reply.stop_reason);
                        r["generated_tokens"] = json!(reply.stats.generated_tokens);
                        r["decode_tokens_per_s"] = json!(reply.stats.decode_tokens_per_s);
                    }
                    Cell::Failed(e) => r["error"] = json!(e),
                    Cell::Waiting | Cell::Running => r["text"] = Value::Null,
                }
                r
            })
            .collect();
        obj.insert("replies".into(), Value::Array(replies));
        Value::Object(obj)
    }

    /// A header row, then one row per prompt: record, system, prompt, reference, then one
    /// column per pane (`<n>: <label>`). A failed reply reads `error: ...`.
    pub fn to_csv(&self) -> Result<Vec<u8>, String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec![
            "record".to_string(),
            "system".into(),
            "prompt".into(),
            "reference".into(),
        ];
        header.extend(
            self.columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{}: {}", i + 1, c.label)),
        );
        w.write_record(&header).map_err(|e| e.to_string())?;
        for row in &self.rows {
            let mut fields = vec![
                row.record.map(|i| i.to_string()).unwrap_or_default(),
                row.system.clone().unwrap_or_default(),
                row.prompt.clone(),
                row.reference.clone().unwrap_or_default(),
            ];
            fields.extend(row.cells.iter().map(|c| match c {
                Cell::Done(r) => r.text.clone(),
                Cell::Failed(e) => format!("error: {e}"),
                Cell::Waiting | Cell::Running => String::new(),
            }));
            w.write_record(&fields).map_err(|e| e.to_string())?;
        }
        w.into_inner().map_err(|e| e.to_string())
    }
}

/// The typed prompts: one per non-empty line, each with the chat's system prompt.
pub fn typed_prompts(text: &str, system: &str) -> Vec<BatchRow> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| BatchRow::new(l.to_string(), system))
        .collect()
}

/// Prompts from a dataset's eval split.
pub struct EvalPrompts {
    pub rows: Vec<BatchRow>,
    /// Records in the eval split.
    pub eval_records: usize,
    /// Eval records without a user prompt to answer (skipped).
    pub skipped: usize,
}

/// The first `limit` records of the eval split the run configuration gives `ds` (the same
/// split, seed and placeholder replacements training uses). Each record's prompt is the
/// conversation up to its last assistant turn, which becomes the reference; a record
/// without a system prompt of its own gets `system`.
pub fn eval_prompts(ds: &Dataset, cfg: &RunConfig, system: &str, limit: usize) -> EvalPrompts {
    let split = cfg.split(ds.len());
    let mut rows = Vec::new();
    let mut skipped = 0;
    for &i in &split.eval {
        if rows.len() >= limit {
            break;
        }
        let Some(c) = ds.get(i) else { continue };
        let mut c = c.clone();
        c.replace_text(&cfg.data.replace);
        let last_trained = c.messages.iter().rposition(|m| m.role.is_trained());
        let (mut context, reference) = match last_trained {
            Some(k) => (
                c.messages[..k].to_vec(),
                Some(c.messages[k].content.clone()),
            ),
            None => (c.messages.clone(), None),
        };
        let Some(prompt) = context.pop().filter(|m| m.role == Role::User) else {
            skipped += 1;
            continue;
        };
        let mut row = BatchRow::new(prompt.content, system);
        if let Some(s) = c.system.filter(|s| !s.trim().is_empty()) {
            row.system = Some(s);
        }
        row.record = Some(i);
        row.history = context;
        row.reference = reference;
        rows.push(row);
    }
    EvalPrompts {
        rows,
        eval_records: split.eval.len(),
        skipped,
    }
}

/// How a finished reply ended, in a few words (empty for a normal end).
pub fn stop_note(r: &BatchReply) -> &'static str {
    match r.stop_reason {
        StopReason::Cancelled => "stopped",
        StopReason::MaxTokens => "token limit",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split::{split_indices, EvalSize};
    use crate::data::{Conversation, Format};
    use crate::infer::GenerationStats;
    use crate::train::config::EvalSplit;

    fn reply(text: &str) -> BatchReply {
        BatchReply {
            text: text.into(),
            stop_reason: StopReason::StopToken,
            stats: GenerationStats::default(),
        }
    }

    fn columns() -> Vec<TableColumn> {
        vec![
            TableColumn {
                label: "Base model".into(),
                adapter: None,
            },
            TableColumn {
                label: "Base + run".into(),
                adapter: Some("/runs/run/adapter".into()),
            },
        ]
    }

    #[test]
    fn typed_prompts_skip_blank_lines() {
        let rows = typed_prompts("Hi\n\n  How are you? \n", " be brief ");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].prompt, "How are you?");
        assert_eq!(rows[0].system.as_deref(), Some("be brief"));
        let m = rows[0].messages();
        assert_eq!((m[0].role.as_str(), m[1].role.as_str()), ("system", "user"));
        assert!(typed_prompts("hi", "  ")[0].system.is_none());
    }

    #[test]
    fn events_fill_the_table_and_it_exports() {
        let mut t = BatchTable::new(
            columns(),
            typed_prompts("a, \"quoted\"\nb", ""),
            Sampling::default(),
            8,
        );
        assert_eq!(t.progress(), (0, 4));
        t.apply(BatchEvent::Started { row: 0, column: 0 });
        t.apply(BatchEvent::Reply {
            row: 0,
            column: 0,
            reply: reply("x\ny"),
        });
        t.apply(BatchEvent::Failed {
            row: None,
            column: 1,
            error: "no adapter".into(),
        });
        t.apply(BatchEvent::Started { row: 1, column: 0 });
        assert_eq!(t.apply(BatchEvent::ColumnDone { column: 0 }), Some(0));
        assert!(matches!(t.rows[1].cells[0], Cell::Waiting));
        assert_eq!(t.progress(), (3, 4));

        let jsonl = String::from_utf8(t.to_jsonl().unwrap()).unwrap();
        let lines: Vec<Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["prompt"], "a, \"quoted\"");
        assert_eq!(lines[0]["replies"][0]["text"], "x\ny");
        assert_eq!(lines[0]["replies"][1]["error"], "no adapter");
        assert_eq!(lines[0]["replies"][1]["adapter"], "/runs/run/adapter");
        assert!(lines[1]["replies"][0]["text"].is_null());

        let csv = t.to_csv().unwrap();
        let mut r = csv::Reader::from_reader(csv.as_slice());
        let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(header[4..], ["1: Base model", "2: Base + run"]);
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(&rows[0][2], "a, \"quoted\"");
        assert_eq!(&rows[0][4], "x\ny");
        assert_eq!(&rows[0][5], "error: no adapter");
    }

    #[test]
    fn eval_prompts_follow_the_training_split() {
        let recs: Vec<Conversation> = (0..20)
            .map(|i| Conversation {
                system: (i == 0).then(|| "own".to_string()),
                messages: vec![
                    Message::new(Role::User, format!("q{i} {{{{name}}}}")),
                    Message::new(Role::Assistant, format!("a{i}")),
                ],
                ..Default::default()
            })
            .collect();
        let ds = Dataset::from_records(recs, Format::ALPACA);
        let mut cfg = RunConfig::default();
        cfg.data.eval_split = EvalSplit::Count(5);
        cfg.data.replace = vec![("{{name}}".into(), "Studio".into())];
        let p = eval_prompts(&ds, &cfg, "sys", 3);
        let split = split_indices(20, EvalSize::Count(5), cfg.training.seed);
        assert_eq!(p.eval_records, 5);
        assert_eq!(p.rows.len(), 3);
        for (row, &i) in p.rows.iter().zip(&split.eval) {
            assert_eq!(row.record, Some(i));
            assert_eq!(row.prompt, format!("q{i} Studio"));
            assert_eq!(row.reference.as_deref(), Some(format!("a{i}").as_str()));
            let want = if i == 0 { "own" } else { "sys" };
            assert_eq!(row.system.as_deref(), Some(want));
        }
    }
}
