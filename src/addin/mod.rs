//! The Outlook add-in's parts that are not HTTP handlers: the task pane's files
//! embedded in the binary (`assets`).

pub mod assets;
