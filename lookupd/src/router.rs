//! The HTTP route table and upstream's routing rules (julienschmidt/
//! httprouter as nsqlookupd configures it): a known path with the wrong
//! method is 405 with an `Allow` header listing the path's methods plus
//! OPTIONS; OPTIONS on a known path is 200 with that header; a path that
//! differs from a route only by a trailing slash, dot segments, repeated
//! slashes or letter case is redirected (301 for GET, 307 otherwise);
//! anything else is 404.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Ping,
    Info,
    Debug,
    Lookup,
    Topics,
    Channels,
    Nodes,
    /// Ours: Prometheus metrics.
    Metrics,
    TopicCreate,
    TopicDelete,
    ChannelCreate,
    ChannelDelete,
    TopicTombstone,
}

/// Upstream's route table for 1.3.0 (the pre-1.0 aliases are gone; the Go
/// profiler under /debug/pprof has no equivalent here and is 404).
const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("GET", "/ping", Endpoint::Ping),
    ("GET", "/info", Endpoint::Info),
    ("GET", "/debug", Endpoint::Debug),
    ("GET", "/lookup", Endpoint::Lookup),
    ("GET", "/topics", Endpoint::Topics),
    ("GET", "/channels", Endpoint::Channels),
    ("GET", "/nodes", Endpoint::Nodes),
    ("GET", "/metrics", Endpoint::Metrics),
    ("POST", "/topic/create", Endpoint::TopicCreate),
    ("POST", "/topic/delete", Endpoint::TopicDelete),
    ("POST", "/channel/create", Endpoint::ChannelCreate),
    ("POST", "/channel/delete", Endpoint::ChannelDelete),
    ("POST", "/topic/tombstone", Endpoint::TopicTombstone),
];

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Routed {
    Handle(Endpoint),
    /// Location path of a trailing-slash or case fix.
    Redirect(&'static str),
    Options(String),
    MethodNotAllowed(String),
    NotFound,
}

/// The `Allow` value for `path`: every other method routed there, plus
/// OPTIONS, sorted; empty when the path is unknown.
fn allowed(path: &str, req_method: &str) -> String {
    let mut methods: Vec<&str> = ROUTES
        .iter()
        .filter(|(m, p, _)| *p == path && *m != req_method && *m != "OPTIONS")
        .map(|(m, _, _)| *m)
        .collect();
    if methods.is_empty() {
        return String::new();
    }
    methods.push("OPTIONS");
    methods.sort_unstable();
    methods.dedup();
    methods.join(", ")
}

/// Go's `path.Clean` for absolute paths: no `.`, `..` or repeated slashes.
/// A trailing slash is kept, as the router's fixed-path lookup keeps it.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if path.ends_with('/') && out.len() > 1 {
        out.push('/');
    }
    out
}

pub(crate) fn route(method: &str, path: &str) -> Routed {
    if let Some((_, _, e)) = ROUTES.iter().find(|(m, p, _)| *m == method && *p == path) {
        return Routed::Handle(*e);
    }
    let method_has_routes = ROUTES.iter().any(|(m, _, _)| *m == method);
    if method_has_routes && method != "CONNECT" && path != "/" {
        let toggled = match path.strip_suffix('/') {
            Some(stripped) => stripped.to_owned(),
            None => format!("{path}/"),
        };
        if let Some((_, p, _)) = ROUTES
            .iter()
            .find(|(m, p, _)| *m == method && *p == toggled)
        {
            return Routed::Redirect(p);
        }
        let fixed = clean_path(path);
        let fixed_stripped = fixed.strip_suffix('/').unwrap_or(&fixed);
        if let Some((_, p, _)) = ROUTES.iter().find(|(m, p, _)| {
            *m == method
                && (p.eq_ignore_ascii_case(&fixed) || p.eq_ignore_ascii_case(fixed_stripped))
        }) {
            return Routed::Redirect(p);
        }
    }
    if method == "OPTIONS" {
        let allow = allowed(path, method);
        if !allow.is_empty() {
            return Routed::Options(allow);
        }
    } else {
        let allow = allowed(path, method);
        if !allow.is_empty() {
            return Routed::MethodNotAllowed(allow);
        }
    }
    Routed::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_like_httprouter() {
        assert_eq!(route("GET", "/lookup"), Routed::Handle(Endpoint::Lookup));
        assert_eq!(
            route("POST", "/topic/tombstone"),
            Routed::Handle(Endpoint::TopicTombstone)
        );
        assert_eq!(
            route("POST", "/lookup"),
            Routed::MethodNotAllowed("GET, OPTIONS".into())
        );
        assert_eq!(
            route("GET", "/topic/create"),
            Routed::MethodNotAllowed("OPTIONS, POST".into())
        );
        assert_eq!(
            route("HEAD", "/ping"),
            Routed::MethodNotAllowed("GET, OPTIONS".into())
        );
        assert_eq!(
            route("OPTIONS", "/ping"),
            Routed::Options("GET, OPTIONS".into())
        );
        assert_eq!(route("OPTIONS", "/nope"), Routed::NotFound);
        assert_eq!(route("GET", "/nope"), Routed::NotFound);
        assert_eq!(route("GET", "/"), Routed::NotFound);
        assert_eq!(route("GET", "/debug/pprof"), Routed::NotFound);
        assert_eq!(route("GET", "/ping/"), Routed::Redirect("/ping"));
        assert_eq!(route("GET", "/PING"), Routed::Redirect("/ping"));
        assert_eq!(
            route("POST", "//topic/./create"),
            Routed::Redirect("/topic/create")
        );
        // A method with no routes at all gets no redirect.
        assert_eq!(route("PUT", "/ping/"), Routed::NotFound);
        assert_eq!(
            route("PUT", "/ping"),
            Routed::MethodNotAllowed("GET, OPTIONS".into())
        );
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("/a//b/./c/../d/"), "/a/b/d/");
        assert_eq!(clean_path("/.."), "/");
        assert_eq!(clean_path("/ping"), "/ping");
    }
}
