//! Text in and out of a model: tokenizers (`tokenizer.json`, byte-level BPE and
//! SentencePiece-style vocabularies from GGUF metadata), chat templates (Jinja through
//! minijinja, with assistant spans for loss masks; the named ones a run may choose), and exact token counts for dataset
//! statistics. Knows nothing of tensors or weights.

mod error;
pub mod named_template;
pub mod template;
mod token_count;
pub mod tokenizer;
mod tokenizer_parts;
pub mod tokenizer_spm;

pub use error::TextError;
pub use named_template::{NamedTemplate, TemplateChoice, TemplateSource};
pub use template::{ChatMessage, ChatTemplate};
pub use tokenizer::Tokenizer;
