//! One VirtualService `http[]` rule -> one [`Route`], validated field by field.

use std::collections::BTreeMap;

use portico_api::istio::{
    CorsPolicy as ApiCors, HeaderOperations, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRoute,
    HttpRouteDestination, StringMatch,
};

use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::duration;
use crate::pattern::{Pattern, SearchPattern};
use crate::table::{
    CorsPolicy, DirectResponse, Forward, HeaderMatch, HeaderOps, PathMatch, PathMatchKind, Provenance, QueryParamMatch,
    Redirect, RedirectPort, RegexRewrite, RetryOn, RetryPolicy, Rewrite, Route, RouteAction, RouteMatch, ValueMatch,
    WeightedDestination,
};

/// A translated rule with the gateways its match entries are limited to.
pub(crate) struct TranslatedRule {
    pub route: Route,
    /// Per match entry: the `match[].gateways` restriction (empty: none),
    /// as `namespace/name`.
    pub match_gateways: Vec<Vec<String>>,
}

/// What a rule needs from its surroundings.
pub(crate) struct RuleContext<'a> {
    pub object: &'a ObjectRef,
    pub cluster_domain: &'a str,
    /// Port of a destination that names none: the only port of its Service.
    pub service_port: &'a dyn Fn(&str) -> Option<u16>,
}

/// Collects diagnostics with the rule's field path prefix.
struct Checker<'a> {
    object: &'a ObjectRef,
    path: String,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(self.object, format!("{}{field}", self.path), message));
    }

    fn warning(&mut self, field: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::warning(self.object, format!("{}{field}", self.path), message));
    }
}

pub(super) fn translate_rule(
    rule: &HttpRoute,
    index: usize,
    context: &RuleContext<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<TranslatedRule> {
    let errors_before = diagnostics.iter().filter(|d| d.is_error()).count();
    let mut check = Checker { object: context.object, path: format!("spec.http[{index}]"), diagnostics };

    let mut matches = Vec::with_capacity(rule.matches.len());
    let mut match_gateways = Vec::with_capacity(rule.matches.len());
    for (match_index, entry) in rule.matches.iter().enumerate() {
        let field = format!(".match[{match_index}]");
        matches.push(route_match(entry, &field, &mut check));
        let namespace = &context.object.namespace;
        match_gateways.push(entry.gateways.iter().map(|g| super::qualify_gateway(g, namespace)).collect());
    }
    let action = action(rule, context, &mut check);
    let request_headers = rule.headers.as_ref().and_then(|h| h.request.as_ref());
    let response_headers = rule.headers.as_ref().and_then(|h| h.response.as_ref());
    let request_headers = header_ops(request_headers, ".headers.request", &mut check);
    let response_headers = header_ops(response_headers, ".headers.response", &mut check);
    let timeout = rule.timeout.as_deref().and_then(|t| duration_field(t, ".timeout", &mut check));
    let retries = retries(rule.retries.as_ref(), &mut check);
    let cors = rule.cors_policy.as_ref().map(|c| cors(c, &mut check));
    for (present, field) in [(rule.fault.is_some(), "fault"), (rule.mirror.is_some(), "mirror")] {
        if present {
            check.warning(&format!(".{field}"), format!("{field} is not supported by Portico and is ignored"));
        }
    }

    let errors_after = check.diagnostics.iter().filter(|d| d.is_error()).count();
    let action = action?;
    if errors_after > errors_before {
        return None;
    }
    let object = context.object;
    let route = Route {
        name: rule.name.clone().unwrap_or_else(|| format!("{}.{}.{index}", object.namespace, object.name)),
        provenance: Provenance { virtual_service: object.clone(), rule_index: index, rule_name: rule.name.clone() },
        matches: matches.into_iter().flatten().collect(),
        action,
        request_headers: request_headers.unwrap_or_default(),
        response_headers: response_headers.unwrap_or_default(),
        timeout,
        retries: retries.unwrap_or_default(),
        cors: cors.flatten().map(Box::new),
    };
    Some(TranslatedRule { route, match_gateways })
}

fn route_match(entry: &HttpMatchRequest, field: &str, check: &mut Checker<'_>) -> Option<RouteMatch> {
    let uri = entry.uri.as_ref().and_then(|uri| {
        let kind = match value_match(uri, &format!("{field}.uri"), false, check)? {
            ValueMatch::Exact(path) => PathMatchKind::Exact(path),
            ValueMatch::Prefix(prefix) if prefix.is_empty() => {
                check.error(&format!("{field}.uri.prefix"), "must not be empty (use \"/\" to match every path)");
                return None;
            }
            ValueMatch::Prefix(prefix) => PathMatchKind::Prefix(prefix),
            ValueMatch::Regex(pattern) => PathMatchKind::Regex(pattern),
        };
        Some(PathMatch { kind, ignore_case: entry.ignore_uri_case })
    });
    let mut optional = |value: &Option<StringMatch>, name: &str| {
        value.as_ref().and_then(|v| value_match(v, &format!("{field}.{name}"), false, check))
    };
    let scheme = optional(&entry.scheme, "scheme");
    let method = optional(&entry.method, "method");
    let authority = optional(&entry.authority, "authority");
    let mut headers = Vec::new();
    for (invert, map, name) in [(false, &entry.headers, "headers"), (true, &entry.without_headers, "withoutHeaders")] {
        for (header, condition) in map {
            let at = format!("{field}.{name}[{header}]");
            if http::HeaderName::from_bytes(header.as_bytes()).is_err()
                || header.bytes().any(|b| b.is_ascii_uppercase())
            {
                check.error(&at, "header names must be valid and lower-case");
                continue;
            }
            let value = if is_empty_match(condition) { None } else { value_match(condition, &at, true, check) };
            headers.push(HeaderMatch { name: header.clone(), value, invert });
        }
    }
    let mut query_params = Vec::new();
    for (name, condition) in &entry.query_params {
        let at = format!("{field}.queryParams[{name}]");
        let value = if is_empty_match(condition) { None } else { value_match(condition, &at, true, check) };
        query_params.push(QueryParamMatch { name: name.clone(), value });
    }
    let port = match entry.port {
        None => None,
        Some(port) => match u16::try_from(port) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                check.error(&format!("{field}.port"), format!("{port} is not a valid port"));
                None
            }
        },
    };
    if entry.source_labels.len() + usize::from(entry.source_namespace.is_some()) > 0 {
        check.warning(field, "sourceLabels and sourceNamespace apply to sidecars only and are ignored at a gateway");
    }
    Some(RouteMatch { uri, scheme, method, authority, headers, query_params, port })
}

fn is_empty_match(condition: &StringMatch) -> bool {
    condition.exact.is_none() && condition.prefix.is_none() && condition.regex.is_none()
}

/// Exactly one of exact/prefix/regex, with a valid regex.
fn value_match(condition: &StringMatch, field: &str, allow_empty: bool, check: &mut Checker<'_>) -> Option<ValueMatch> {
    let set: Vec<&str> = [("exact", &condition.exact), ("prefix", &condition.prefix), ("regex", &condition.regex)]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|_| name))
        .collect();
    match set.as_slice() {
        [] if allow_empty => None,
        [] => {
            check.error(field, "one of exact, prefix or regex is required");
            None
        }
        [_] => {
            if let Some(exact) = &condition.exact {
                Some(ValueMatch::Exact(exact.clone()))
            } else if let Some(prefix) = &condition.prefix {
                Some(ValueMatch::Prefix(prefix.clone()))
            } else {
                let source = condition.regex.as_deref().unwrap_or_default();
                match Pattern::new(source) {
                    Ok(pattern) => Some(ValueMatch::Regex(pattern)),
                    Err(error) => {
                        check.error(&format!("{field}.regex"), format!("invalid regex {source:?}: {error}"));
                        None
                    }
                }
            }
        }
        several => {
            check.error(
                field,
                format!("only one of exact, prefix or regex may be set, found {}", several.join(" and ")),
            );
            None
        }
    }
}

fn action(rule: &HttpRoute, context: &RuleContext<'_>, check: &mut Checker<'_>) -> Option<RouteAction> {
    if rule.delegate.is_some() {
        check.error(".delegate", "delegate VirtualServices are not supported by Portico");
        return None;
    }
    let kinds: Vec<&str> = [
        (!rule.route.is_empty(), "route"),
        (rule.redirect.is_some(), "redirect"),
        (rule.direct_response.is_some(), "directResponse"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if kinds.len() != 1 {
        let found = if kinds.is_empty() { "none".to_string() } else { kinds.join(" and ") };
        check.error("", format!("exactly one of route, redirect or directResponse is required, found {found}"));
        return None;
    }
    if rule.rewrite.is_some() && rule.route.is_empty() {
        check.error(".rewrite", "rewrite is only valid with route (not with redirect or directResponse)");
        return None;
    }
    if let Some(redirect) = &rule.redirect {
        return self::redirect(redirect, check).map(RouteAction::Redirect);
    }
    if let Some(direct) = &rule.direct_response {
        let Some(status) = u16::try_from(direct.status).ok().filter(|s| (200..=599).contains(s)) else {
            check.error(
                ".directResponse.status",
                format!("{} is not an HTTP status between 200 and 599", direct.status),
            );
            return None;
        };
        let body = direct.body.as_ref().map_or(Ok(String::new()), |body| match (&body.string, &body.bytes) {
            (Some(text), None) => Ok(text.clone()),
            (None, Some(base64)) => decode_base64(base64),
            (None, None) => Ok(String::new()),
            (Some(_), Some(_)) => Err("only one of string or bytes may be set".to_string()),
        });
        return match body {
            Ok(body) => Some(RouteAction::DirectResponse(DirectResponse { status, body })),
            Err(reason) => {
                check.error(".directResponse.body", reason);
                None
            }
        };
    }
    let destinations = destinations(&rule.route, context, check)?;
    let rewrite = rule.rewrite.as_ref().map(|rewrite| {
        let uri_regex = rewrite.uri_regex_rewrite.as_ref().and_then(|r| match SearchPattern::new(&r.pattern) {
            Ok(pattern) => Some(RegexRewrite { pattern, replacement: envoy_to_rust_replacement(&r.rewrite) }),
            Err(error) => {
                check.error(".rewrite.uriRegexRewrite.match", format!("invalid regex {:?}: {error}", r.pattern));
                None
            }
        });
        if rewrite.uri.is_some() && rewrite.uri_regex_rewrite.is_some() {
            check.error(".rewrite", "uri and uriRegexRewrite are mutually exclusive");
        }
        Rewrite { uri: rewrite.uri.clone(), authority: rewrite.authority.clone(), uri_regex }
    });
    Some(RouteAction::Forward(Forward { destinations, rewrite: rewrite.unwrap_or_default() }))
}

fn destinations(
    routes: &[HttpRouteDestination],
    context: &RuleContext<'_>,
    check: &mut Checker<'_>,
) -> Option<Vec<WeightedDestination>> {
    let mut destinations = Vec::with_capacity(routes.len());
    for (index, route) in routes.iter().enumerate() {
        let field = format!(".route[{index}]");
        let host = route.destination.host.trim().to_ascii_lowercase();
        if host.is_empty() {
            check.error(&format!("{field}.destination.host"), "is required");
            return None;
        }
        // Istio resolves a short name in the VirtualService's namespace.
        let host = if host.contains('.') {
            host
        } else {
            format!("{host}.{}.svc.{}", context.object.namespace, context.cluster_domain)
        };
        let port = match route.destination.port.as_ref().map(|p| p.number) {
            Some(number) => match u16::try_from(number) {
                Ok(port) if port > 0 => port,
                _ => {
                    check.error(&format!("{field}.destination.port.number"), format!("{number} is not a valid port"));
                    return None;
                }
            },
            None => match (context.service_port)(&host) {
                Some(port) => port,
                None => {
                    check.error(
                        &format!("{field}.destination.port"),
                        format!("is required: {host} is not a known Service with exactly one port"),
                    );
                    return None;
                }
            },
        };
        let weight = match route.weight {
            None if routes.len() == 1 => 100,
            None => 0,
            Some(weight) if weight >= 0 => weight.unsigned_abs(),
            Some(weight) => {
                check.error(&format!("{field}.weight"), format!("{weight} is negative"));
                return None;
            }
        };
        if route.destination.subset.is_some() {
            check.warning(&format!("{field}.destination.subset"), "subsets need DestinationRules and are ignored");
        }
        let request = route.headers.as_ref().and_then(|h| h.request.as_ref());
        let response = route.headers.as_ref().and_then(|h| h.response.as_ref());
        destinations.push(WeightedDestination {
            host,
            port,
            weight,
            request_headers: header_ops(request, &format!("{field}.headers.request"), check).unwrap_or_default(),
            response_headers: header_ops(response, &format!("{field}.headers.response"), check).unwrap_or_default(),
        });
    }
    if destinations.iter().all(|d| d.weight == 0) {
        check.error(".route", "the destinations' weights add up to 0");
        return None;
    }
    Some(destinations)
}

fn redirect(redirect: &HttpRedirect, check: &mut Checker<'_>) -> Option<Redirect> {
    let status = match redirect.redirect_code.unwrap_or(301) {
        code @ (301 | 302 | 303 | 307 | 308) => code as u16,
        other => {
            check
                .error(".redirect.redirectCode", format!("{other} is not a redirect status (301, 302, 303, 307, 308)"));
            return None;
        }
    };
    let port = match (redirect.port, redirect.derive_port.as_deref()) {
        (Some(_), Some(_)) => {
            check.error(".redirect", "port and derivePort are mutually exclusive");
            return None;
        }
        (Some(port), None) => match u16::try_from(port) {
            Ok(port) if port > 0 => RedirectPort::Fixed(port),
            _ => {
                check.error(".redirect.port", format!("{port} is not a valid port"));
                return None;
            }
        },
        (None, None) => RedirectPort::Unchanged,
        (None, Some("FROM_PROTOCOL_DEFAULT")) => RedirectPort::ProtocolDefault,
        (None, Some("FROM_REQUEST_PORT")) => RedirectPort::FromRequest,
        (None, Some(other)) => {
            check.error(".redirect.derivePort", format!("{other:?} is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"));
            return None;
        }
    };
    Some(Redirect {
        uri: redirect.uri.clone(),
        authority: redirect.authority.clone(),
        scheme: redirect.scheme.clone(),
        port,
        status,
    })
}

fn header_ops(ops: Option<&HeaderOperations>, field: &str, check: &mut Checker<'_>) -> Option<HeaderOps> {
    let ops = ops?;
    let mut valid = true;
    let mut pairs = |map: &BTreeMap<String, String>, kind: &str| -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(map.len());
        for (name, value) in map {
            let lower = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                check.error(&format!("{field}.{kind}[{name}]"), "is not a valid header name");
                valid = false;
            } else if http::HeaderValue::from_str(value).is_err() {
                check.error(&format!("{field}.{kind}[{name}]"), "value has characters not allowed in a header");
                valid = false;
            } else {
                out.push((lower, value.clone()));
            }
        }
        out
    };
    let set = pairs(&ops.set, "set");
    let add = pairs(&ops.add, "add");
    let remove = ops.remove.iter().map(|n| n.to_ascii_lowercase()).collect();
    valid.then(|| HeaderOps::new(set, add, remove))
}

fn duration_field(text: &str, field: &str, check: &mut Checker<'_>) -> Option<std::time::Duration> {
    duration::parse(text).map_err(|reason| check.error(field, reason)).ok()
}

fn retries(retry: Option<&HttpRetry>, check: &mut Checker<'_>) -> Option<RetryPolicy> {
    let retry = retry?;
    let Ok(attempts) = u32::try_from(retry.attempts) else {
        check.error(".retries.attempts", format!("{} is negative", retry.attempts));
        return None;
    };
    let per_try_timeout =
        retry.per_try_timeout.as_deref().and_then(|t| duration_field(t, ".retries.perTryTimeout", check));
    let mut retry_on = RetryOn::default();
    match retry.retry_on.as_deref() {
        None => retry_on = RetryPolicy::default().retry_on,
        Some(list) => {
            for condition in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                match condition {
                    "connect-failure" => retry_on.connect_failure = true,
                    "refused-stream" => retry_on.refused_stream = true,
                    "reset" | "reset-before-request" => retry_on.reset = true,
                    "5xx" => retry_on.server_error = true,
                    "gateway-error" => retry_on.gateway_error = true,
                    "retriable-status-codes" => {}
                    "unavailable" | "cancelled" | "deadline-exceeded" | "internal" | "resource-exhausted" => {}
                    code => match code.parse::<u16>() {
                        Ok(status) if (100..=599).contains(&status) => retry_on.status_codes.push(status),
                        _ => {
                            check.warning(".retries.retryOn", format!("{code:?} is not a supported condition; ignored"))
                        }
                    },
                }
            }
        }
    }
    Some(RetryPolicy { attempts, per_try_timeout, retry_on })
}

fn cors(policy: &ApiCors, check: &mut Checker<'_>) -> Option<CorsPolicy> {
    let mut allow_origins = Vec::new();
    for (index, origin) in policy.allow_origins.iter().enumerate() {
        allow_origins.push(value_match(origin, &format!(".corsPolicy.allowOrigins[{index}]"), false, check)?);
    }
    allow_origins.extend(policy.allow_origin.iter().map(|o| ValueMatch::Exact(o.clone())));
    let max_age = policy.max_age.as_deref().and_then(|t| duration_field(t, ".corsPolicy.maxAge", check));
    Some(CorsPolicy {
        allow_origins,
        allow_methods: policy.allow_methods.clone(),
        allow_headers: policy.allow_headers.clone(),
        expose_headers: policy.expose_headers.clone(),
        max_age,
        allow_credentials: policy.allow_credentials.unwrap_or(false),
    })
}

/// Envoy (RE2) writes capture references as `\1`; Rust's regex as `${1}`.
fn envoy_to_rust_replacement(replacement: &str) -> String {
    let mut out = String::with_capacity(replacement.len());
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(digit) = chars.next_if(char::is_ascii_digit) {
                    out.push(digit);
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            other => out.push(other),
        }
    }
    out
}

/// Standard base64 (as protobuf JSON encodes `bytes`).
fn decode_base64(text: &str) -> Result<String, String> {
    let bytes: portico_api::k8s_openapi::ByteString =
        serde_json::from_value(serde_json::Value::String(text.to_string()))
            .map_err(|error| format!("bytes is not valid base64: {error}"))?;
    Ok(String::from_utf8_lossy(&bytes.0).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_capture_references() {
        assert_eq!(envoy_to_rust_replacement(r"/v2/\1/\12"), "/v2/${1}/${12}");
        assert_eq!(envoy_to_rust_replacement("/cost$"), "/cost$$");
    }
}
