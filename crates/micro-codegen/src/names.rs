//! Names, the way protoc-gen-micro gives them.

/// The client's name: the service name plus `Service`, except that a name already
/// ending in `Service` is kept (`ServiceService` becomes `Service`).
pub(crate) fn client_name(service: &str) -> String {
    let alias = format!("{service}Service");
    match alias.strip_suffix("ServiceService") {
        Some(stem) => format!("{stem}Service"),
        None => alias,
    }
}

/// `VesselService` -> `vessel_service`, `HTTPProxy` -> `http_proxy`.
pub(crate) fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A Rust path for a message, as prost-build names it: nested messages live in a
/// module named after their parent (`Outer.Inner` -> `outer::Inner`).
pub(crate) fn message_path(parents: &[&str], name: &str) -> String {
    use heck::{ToSnakeCase, ToUpperCamelCase};
    let mut path: Vec<String> = parents
        .iter()
        .map(|p| sanitize(p.to_snake_case()))
        .collect();
    let mut type_name = name.to_upper_camel_case();
    if type_name == "Self" {
        type_name.push('_');
    }
    path.push(type_name);
    path.join("::")
}

/// prost-build's escaping of a snake-case identifier that is a keyword.
fn sanitize(ident: String) -> String {
    const RAW: &[&str] = &[
        "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "do",
        "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in",
        "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
        "return", "static", "struct", "trait", "true", "try", "type", "typeof", "unsafe",
        "unsized", "use", "virtual", "where", "while", "yield",
    ];
    if matches!(ident.as_str(), "self" | "super" | "crate") {
        format!("{ident}_")
    } else if RAW.contains(&ident.as_str()) {
        format!("r#{ident}")
    } else {
        ident
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protoc_gen_micro_names() {
        assert_eq!(client_name("Greeter"), "GreeterService");
        assert_eq!(client_name("VesselService"), "VesselService");
        assert_eq!(client_name("ShippingService"), "ShippingService");
        assert_eq!(snake_case("VesselService"), "vessel_service");
        assert_eq!(snake_case("HTTPProxy"), "http_proxy");
        assert_eq!(snake_case("Greeter2Go"), "greeter2_go");
        assert_eq!(message_path(&[], "Vessel"), "Vessel");
        assert_eq!(message_path(&["Outer"], "Inner"), "outer::Inner");
        assert_eq!(message_path(&["Type", "Mid"], "Leaf"), "r#type::mid::Leaf");
    }
}
