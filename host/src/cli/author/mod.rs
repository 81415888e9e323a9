//! TEMPORARY (helper `langs`): the `author` helper owns this file; its
//! version declares these modules and calls them from `evhost new/build/dev`.
//! Until the merge, only the Python and JavaScript parts live here.

pub mod js;
mod lang;
pub mod python;
