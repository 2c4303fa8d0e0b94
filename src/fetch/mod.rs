//! The fetch stage: plans report windows from watermarks (in appliance time), runs the
//! requests and spools the bodies for the parse stage.

pub mod plan;
