//! Instruction datasets: the normalized record, format readers and writers, validation, editing, statistics.
