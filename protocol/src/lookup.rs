//! nsqlookupd TCP protocol V1 (nsqd to nsqlookupd): commands and replies.
