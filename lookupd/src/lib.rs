//! nsqlookupd.
