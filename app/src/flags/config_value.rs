//! Reading an option back by its config-file key, as upstream's
//! `/config/:opt` does: the JSON value Go would encode.

/// The JSON value of the option whose config-file key is `$key`, among the
/// options that are plain fields of `$opts` named as their key: `plain` ones
/// as they are, `durations` ([`GoDuration`](crate::GoDuration)) in
/// nanoseconds as Go encodes a `time.Duration`; `None` for any other key.
/// Options with another name or a computed value are matched by the caller
/// before this.
#[macro_export]
macro_rules! option_field_json {
    ($key:expr, $opts:expr, plain: [$($plain:ident),* $(,)?], durations: [$($dur:ident),* $(,)?] $(,)?) => {
        match $key {
            $(stringify!($plain) => Some(::serde_json::json!($opts.$plain)),)*
            $(stringify!($dur) => Some(::serde_json::json!($opts.$dur.as_nanos_i64())),)*
            _ => None,
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::GoDuration;

    struct Opts {
        name: String,
        tick: GoDuration,
    }

    #[test]
    fn plain_fields_and_durations_by_key() {
        let o = Opts {
            name: "n".into(),
            tick: "2s".parse().unwrap(),
        };
        let get = |key: &str| option_field_json!(key, o, plain: [name], durations: [tick]);
        assert_eq!(get("name"), Some(serde_json::json!("n")));
        assert_eq!(get("tick"), Some(serde_json::json!(2_000_000_000_i64)));
        assert_eq!(get("other"), None);
    }
}
