//! The report page: a static frame, the summary as inert JSON, and the
//! script that draws it. Nothing of the summary becomes markup on this
//! side; the script puts it into the page as text only.

use serde_json::Value;

const STYLE: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");

/// Collects script errors into `#script-errors` before the report script
/// runs, so a page that failed to draw says so (and a test can see it).
const ERROR_HOOK: &str = r#"(function () {
  var box = document.getElementById("script-errors");
  function note(text) {
    box.textContent += text + "\n";
    box.hidden = false;
  }
  window.addEventListener("error", function (e) {
    note("error: " + (e.message || "unknown") + " (line " + (e.lineno || "?") + ")");
  });
  var original = console.error;
  console.error = function () {
    note("console.error: " + Array.prototype.join.call(arguments, " "));
    original.apply(console, arguments);
  };
})();"#;

/// The whole page for `summary`.
pub fn render(summary: &Value) -> String {
    let data = script_safe_json(summary);
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>walplayer report</title>
<style>
{STYLE}</style>
</head>
<body>
<pre id="script-errors" class="script-errors" hidden></pre>
<script>
{ERROR_HOOK}
</script>
<main id="report">
<noscript><p>This report draws itself with JavaScript; the run's summary is in the page source.</p></noscript>
</main>
<script type="application/json" id="summary">{data}</script>
<script>
{SCRIPT}</script>
</body>
</html>
"#
    )
}

/// `v` as JSON that cannot end the `<script>` element holding it or open
/// a comment there: `<`, `>` and `&` (only ever inside JSON strings) are
/// written as `\u` escapes, which JSON reads back as the same characters.
fn script_safe_json(v: &Value) -> String {
    let json = serde_json::to_string(v).expect("a JSON value always encodes");
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hostile_names_stay_inside_the_json_and_read_back_unchanged() {
        let name = "</script><script>alert(1)</script><!-- & \u{2028}";
        let s = json!({"filesOk": 1, "cluster": name, "agents": [{"name": name}]});
        let page = render(&s);
        assert_eq!(page.matches("</script>").count(), 3, "only the page's own");
        assert!(!page.contains("<!--"));
        let start = page.find(r#"id="summary">"#).unwrap() + r#"id="summary">"#.len();
        let end = start + page[start..].find("</script>").unwrap();
        let back: Value = serde_json::from_str(&page[start..end]).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn the_page_needs_no_network() {
        let page = render(&json!({"filesOk": 0}));
        // The SVG namespace is a name, never fetched.
        let page = page.replace("http://www.w3.org/2000/svg", "");
        for needle in [
            "http:", "https:", "src=", "href=", "<link", "@import", "url(",
        ] {
            assert!(!page.contains(needle), "the page references {needle}");
        }
    }
}
