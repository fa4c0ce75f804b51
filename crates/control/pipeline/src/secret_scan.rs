//! Secret scanning for the CI pipeline step.
//!
//! This module owns:
//!
//! * **The built-in rules** ([`rules`]): well-known token formats modelled on
//!   gitleaks' default rules (AWS, GitHub, Slack, Stripe, Google, PEM/PGP
//!   private keys) plus one `generic-secret` rule for assignments to
//!   secret-ish names, filtered by entropy ([`MIN_ENTROPY`]) and placeholder checks.
//!   Specific rules always win over `generic-secret` for the same span.
//! * **The allow-list format** ([`AllowList`]), read from
//!   `.slipway-secrets-allow`. One entry per line; blank lines, lines starting
//!   with `#` and trailing ` # comments` are ignored:
//!
//!   ```text
//!   tests/fixtures/**                  # PATH_GLOB: every finding in matching files
//!   config/dev.env:12                  # PATH:LINE: one line of one file
//!   src/demo.rs:40:generic-secret      # PATH:LINE:RULE: exactly one finding's fingerprint
//!   rule:slack-webhook docs/*.md       # rule:RULE PATH_GLOB: one rule in matching files
//!   ```
//!
//!   Globs match the whole repository-relative path and `*` does not cross
//!   `/` (use `**/name` for "at any depth").
//! * **The inline marker**: a line containing `slipway:allow-secret` (usually
//!   in a comment) is never reported.
//! * **What is skipped** by [`scan_files`]: binary files (a NUL byte in the
//!   first 8 KiB), files over 2 MiB, paths that are listed but missing or not
//!   regular files (deleted files, submodules, symlinks — a symlink's target is
//!   scanned under its own path if it is tracked), and the allow-list file
//!   itself, which necessarily names findings.
//!
//! Findings never carry the secret: only a redacted prefix and its length.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::LazyLock;

use globset::{GlobBuilder, GlobMatcher};
use regex::{Match, Regex, RegexBuilder};
use serde::Serialize;

/// Text that, anywhere on a line, suppresses every finding on that line.
pub const INLINE_MARKER: &str = "slipway:allow-secret";

/// File name of the allow-list; files with this name are never scanned.
pub const ALLOW_FILE_NAME: &str = ".slipway-secrets-allow";

/// Files larger than this are skipped: real secrets live in small text files,
/// and large ones are generated artefacts that would only slow CI down.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// How much of a file is sniffed for a NUL byte (the same heuristic as git).
const BINARY_SNIFF_BYTES: usize = 8 * 1024;

/// Minimum Shannon entropy, in bits per character, of a `generic-secret` value.
///
/// 3.5 is gitleaks' threshold for its generic rule. It rejects all-decimal
/// values (at most log2(10) ≈ 3.32), repeated or patterned strings and most
/// word-like values, while random base62/base64 tokens of 16+ characters
/// clear it (about 96% at 16 characters, effectively all at 20+). The price:
/// short hex secrets (16–32 hex digits) often fall below it; the specific
/// rules and code review have to catch those.
pub const MIN_ENTROPY: f64 = 3.5;

/// Substrings (compared case-insensitively) that mark a value as a
/// placeholder. Templates (`${…}`, `$(…)`, `{{…}}`, `<…>`) need no entry:
/// `$`, `{` and `<` are outside the value alphabet, so they never form a
/// complete value (see `is_whole_value`).
const PLACEHOLDERS: &[&str] = &[
    "example",
    "sample",
    "changeme",
    "xxxx",
    "your",
    "dummy",
    "placeholder",
    "redacted",
];

/// Name of the catch-all rule that specific rules take precedence over.
const GENERIC: &str = "generic-secret";

/// Extra confirmation a rule's match needs beyond the regex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// The token format alone is convincing.
    None,
    /// The value of an assignment must be the whole literal, so that
    /// `secret: cfg.secret.clone(),` (code, not a value) is not a finding.
    WholeValue,
    /// `WholeValue` plus the filters in `looks_random`.
    Generic,
}

/// One built-in detection rule.
#[derive(Debug)]
pub struct Rule {
    /// Stable kebab-case identifier, used in findings and the allow-list.
    pub name: &'static str,
    /// One-line human description.
    pub description: &'static str,
    /// Pattern; the secret is capture group 1, or the whole match if the
    /// pattern has no group.
    pub regex: Regex,
    check: Check,
}

/// (name, description, check, pattern). Order matters: specific rules are
/// tried first so their spans are taken before `generic-secret` runs.
/// Patterns are compiled without Unicode, so `\b` is an ASCII word boundary
/// and the fast DFA engines never have to give up on non-ASCII text.
const RULE_TABLE: &[(&str, &str, Check, &str)] = &[
    (
        "aws-access-key-id",
        "AWS access key ID",
        Check::None,
        r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})\b",
    ),
    (
        "aws-secret-access-key",
        "AWS secret access key assigned to an aws_secret_access_key-like name",
        Check::WholeValue,
        r#"(?i:aws_?secret_?access_?key)["']?[ \t]*(?:=>|:=|=|:)[ \t]*["']?([A-Za-z0-9/+=]{40})"#,
    ),
    (
        "github-token",
        "GitHub personal access, OAuth, app or refresh token",
        Check::None,
        r"\b(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{82})\b",
    ),
    (
        "slack-token",
        "Slack bot, user, app or refresh token",
        Check::None,
        r"\b(xox[baprs]-[0-9]+-[0-9A-Za-z-]{10,})",
    ),
    (
        "slack-webhook",
        "Slack incoming webhook URL",
        Check::None,
        r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,}",
    ),
    (
        "stripe-key",
        "Stripe secret or restricted API key",
        Check::None,
        r"\b((?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,})\b",
    ),
    (
        "google-api-key",
        "Google API key",
        Check::None,
        r"\b(AIza[0-9A-Za-z_-]{35})",
    ),
    (
        "private-key",
        "PEM or PGP private key block",
        Check::None,
        // `PGP … KEY BLOCK` is PGP's armour; the other combinations are harmless.
        "-----BEGIN (?:(?:RSA|EC|DSA|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY(?: BLOCK)?-----",
    ),
    (
        GENERIC,
        "High-entropy value assigned to a secret-like name",
        Check::Generic,
        // name, optional closing quote, optional type annotation
        // (`let token: &str = …`), operator, optional opening quote, value.
        concat!(
            r"(?i)[a-z0-9_.-]*(?:secret|token|passw(?:or)?d|pwd|api[_-]?key|private[_-]?key|credential)",
            r#"[a-z0-9_.-]*["']?(?:[ \t]*:[ \t]*&?(?:'static[ \t]+)?[a-z_][a-z0-9_<>]*)?"#,
            r#"[ \t]*(?:=>|:=|=|:)[ \t]*["']?([a-z0-9+/=_.-]{16,})"#,
        ),
    ),
];

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    RULE_TABLE
        .iter()
        .map(|&(name, description, check, pattern)| Rule {
            name,
            description,
            regex: RegexBuilder::new(pattern)
                .unicode(false)
                .build()
                .expect("built-in rule compiles"),
            check,
        })
        .collect()
});

/// The built-in rules, specific ones first and `generic-secret` last.
pub fn rules() -> &'static [Rule] {
    &RULES
}

/// One reported secret. Carries no secret material, so it is safe to print,
/// log and upload as a CI artefact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Repository-relative, `/`-separated path, as given to the scanner.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column of the secret's first character, counted in chars.
    pub column: usize,
    /// Name of the rule that matched.
    pub rule: String,
    /// First 4 characters of the secret, `…`, and its length in characters.
    pub redacted: String,
    /// `file:line:rule`; an allow-list line with this text silences it.
    pub fingerprint: String,
}

impl Finding {
    fn new(file: &str, line: usize, column: usize, rule: &str, secret: &str) -> Self {
        let prefix: String = secret.chars().take(4).collect();
        Self {
            file: file.to_owned(),
            line,
            column,
            rule: rule.to_owned(),
            redacted: format!("{prefix}…{}", secret.chars().count()),
            fingerprint: format!("{file}:{line}:{rule}"),
        }
    }
}

/// Scans one file's content. Findings are in line (then column) order, one
/// per secret occurrence; lines carrying [`INLINE_MARKER`] are not reported.
pub fn scan_text(file: &str, text: &str) -> Vec<Finding> {
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    // Byte spans already reported: a later (less specific) rule must not
    // report the same secret again.
    let mut taken: Vec<(usize, usize)> = Vec::new();
    let mut found: Vec<(usize, Finding)> = Vec::new();
    for rule in rules() {
        for caps in rule.regex.captures_iter(text) {
            let Some(m) = caps.get(1).or_else(|| caps.get(0)) else {
                continue;
            };
            if !confirmed(rule.check, text, m)
                || taken.iter().any(|&(s, e)| m.start() < e && s < m.end())
            {
                continue;
            }
            // line_starts[0] == 0, so the partition point is at least 1.
            let idx = line_starts.partition_point(|&s| s <= m.start()) - 1;
            let start = line_starts[idx];
            let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            if text[start..end].contains(INLINE_MARKER) {
                continue;
            }
            let column = text[start..m.start()].chars().count() + 1;
            taken.push((m.start(), m.end()));
            found.push((
                m.start(),
                Finding::new(file, idx + 1, column, rule.name, m.as_str()),
            ));
        }
    }
    found.sort_by_key(|&(start, _)| start);
    found.into_iter().map(|(_, f)| f).collect()
}

fn confirmed(check: Check, text: &str, m: Match<'_>) -> bool {
    match check {
        Check::None => true,
        Check::WholeValue => is_whole_value(text, m),
        Check::Generic => is_whole_value(text, m) && looks_random(m.as_str()),
    }
}

/// A quoted value must end at the matching quote; an unquoted one (YAML,
/// .env, INI) must end the line, optionally before a `#` comment. Anything
/// else is an expression in code (`token = cfg.token.clone();`), or a value
/// with a template in it (`"${DB_PASSWORD}"`), not a literal secret.
fn is_whole_value(text: &str, m: Match<'_>) -> bool {
    let after = &text[m.end()..];
    match text[..m.start()].chars().next_back() {
        Some(quote @ ('"' | '\'')) => after.starts_with(quote),
        _ => {
            let rest = after.trim_start_matches([' ', '\t']);
            rest.is_empty() || rest.starts_with(['\n', '\r', '#'])
        }
    }
}

/// The `generic-secret` filters: at least [`MIN_ENTROPY`] (which also
/// rejects a repeated character: 0 bits), not a placeholder, not a path, and
/// not a single-case word list such as `my-app-database-credentials` or
/// `DB_PASSWORD_FILE` (a random 16-char base62 token is single-case without
/// digits with probability ~1e-6, so this costs almost no recall).
fn looks_random(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let placeholder = PLACEHOLDERS.iter().any(|p| lower.contains(p));
    let path = value.starts_with('/') || value.starts_with("./") || value.starts_with("../");
    let word_list = !value.bytes().any(|b| b.is_ascii_digit())
        && (!value.bytes().any(|b| b.is_ascii_uppercase())
            || !value.bytes().any(|b| b.is_ascii_lowercase()));
    !placeholder && !path && !word_list && shannon_entropy(value) >= MIN_ENTROPY
}

/// Shannon entropy in bits per character; 0 for an empty or one-symbol string.
fn shannon_entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::<char, usize>::new();
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let len = s.chars().count() as f64;
    counts
        .values()
        .map(|&n| {
            let p = n as f64 / len;
            -p * p.log2()
        })
        .sum()
}

/// Error from [`AllowList::parse`]: which line is wrong and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowListError {
    /// 1-based line number in the allow-list text.
    pub line: usize,
    /// What is wrong with that line.
    pub message: String,
}

impl fmt::Display for AllowListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ALLOW_FILE_NAME} line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for AllowListError {}

#[derive(Debug)]
enum Entry {
    Files(GlobMatcher),
    Line {
        file: String,
        line: usize,
    },
    Exact {
        file: String,
        line: usize,
        rule: String,
    },
    RuleIn {
        rule: String,
        files: GlobMatcher,
    },
}

/// Findings the repository has accepted; see the module docs for the format.
#[derive(Debug, Default)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// Parses allow-list text. Fails on the first invalid line (bad glob,
    /// non-numeric LINE, unknown rule name), naming it.
    pub fn parse(text: &str) -> Result<AllowList, AllowListError> {
        let mut entries = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let entry = parse_entry(line).map_err(|message| AllowListError {
                line: idx + 1,
                message,
            })?;
            entries.push(entry);
        }
        Ok(AllowList { entries })
    }

    /// Whether some entry silences `finding`.
    pub fn allows(&self, finding: &Finding) -> bool {
        let path = finding.file.as_str();
        self.entries.iter().any(|entry| match entry {
            Entry::Files(glob) => glob.is_match(path),
            Entry::Line { file, line } => file == path && *line == finding.line,
            Entry::Exact { file, line, rule } => {
                file == path && *line == finding.line && *rule == finding.rule
            }
            Entry::RuleIn { rule, files } => *rule == finding.rule && files.is_match(path),
        })
    }
}

/// Drops a whole-line comment or a `#` preceded by whitespace; a `#` inside a
/// path (`docs/c#/x.md`) stays.
fn strip_comment(line: &str) -> &str {
    match line
        .match_indices('#')
        .find(|&(i, _)| line[..i].trim().is_empty() || line[..i].ends_with([' ', '\t']))
    {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

fn parse_entry(line: &str) -> Result<Entry, String> {
    if let Some(rest) = line.strip_prefix("rule:") {
        let mut parts = rest.split_whitespace();
        return match (parts.next(), parts.next(), parts.next()) {
            (Some(rule), Some(glob), None) => Ok(Entry::RuleIn {
                rule: known_rule(rule)?,
                files: compile_glob(glob)?,
            }),
            _ => Err(format!("expected `rule:RULE PATH_GLOB`, got `{line}`")),
        };
    }
    let mut parts = line.splitn(3, ':');
    let file = normalize(parts.next().unwrap_or_default());
    if file.is_empty() {
        return Err(format!("missing path in `{line}`"));
    }
    match (parts.next(), parts.next()) {
        (None, _) => Ok(Entry::Files(compile_glob(&file)?)),
        (Some(num), rule) => {
            let line = match num.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("LINE `{num}` is not a positive line number")),
            };
            Ok(match rule {
                None => Entry::Line { file, line },
                Some(rule) => Entry::Exact {
                    file,
                    line,
                    rule: known_rule(rule.trim())?,
                },
            })
        }
    }
}

/// Findings use git's path spelling; tolerate a leading `./` in the file.
fn normalize(path: &str) -> String {
    path.trim().trim_start_matches("./").to_owned()
}

fn known_rule(name: &str) -> Result<String, String> {
    if rules().iter().any(|r| r.name == name) {
        return Ok(name.to_owned());
    }
    let known: Vec<&str> = rules().iter().map(|r| r.name).collect();
    Err(format!(
        "unknown rule `{name}` (known rules: {})",
        known.join(", ")
    ))
}

fn compile_glob(glob: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(&normalize(glob))
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid path glob: {e}"))
}

/// Result of [`scan_files`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    /// Findings not silenced by the allow-list, in file then line order.
    pub findings: Vec<Finding>,
    /// Findings silenced by the allow-list (inline-marked lines are not
    /// findings at all and are not counted).
    pub allowed: usize,
    /// Files whose content was scanned.
    pub files_scanned: usize,
    /// Listed files that were skipped (binary, too large, missing, not a
    /// regular file, or the allow-list itself).
    pub files_skipped: usize,
}

/// Scans `files` (repository-relative, as from `git ls-files`) under `root`.
/// Errors only on I/O failures other than a missing file, with the path in
/// the message, so CI fails loudly instead of silently skipping content.
pub fn scan_files(root: &Path, files: &[String], allow: &AllowList) -> io::Result<ScanReport> {
    let mut report = ScanReport::default();
    for file in files {
        let Some(text) = read_scannable(root, file)? else {
            report.files_skipped += 1;
            continue;
        };
        report.files_scanned += 1;
        for finding in scan_text(file, &text) {
            if allow.allows(&finding) {
                report.allowed += 1;
            } else {
                report.findings.push(finding);
            }
        }
    }
    Ok(report)
}

/// The file's text, or `None` if it is to be skipped.
fn read_scannable(root: &Path, file: &str) -> io::Result<Option<String>> {
    if file.rsplit('/').next() == Some(ALLOW_FILE_NAME) {
        return Ok(None);
    }
    let path = root.join(file);
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{file}: {e}"));
    // symlink_metadata: never follow a tracked symlink out of the repository.
    let meta = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(with_path)?,
    };
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Ok(None);
    }
    let bytes = match fs::read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(with_path)?,
    };
    if bytes.iter().take(BINARY_SNIFF_BYTES).any(|&b| b == 0) {
        return Ok(None);
    }
    // Non-UTF-8 text (e.g. Latin-1) is still scanned; secrets are ASCII.
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Planted secrets are assembled at run time so that this file never
    // contains one literally: Slipway's own scan of its repository (and
    // hosting push protection) stays quiet. All are documented example or
    // obviously fake values in the real formats.
    fn aws_key_id() -> String {
        ["AKIA", "IOSFODNN7EXAMPLE"].concat()
    }
    fn aws_secret() -> String {
        ["wJalrXUtnFEMI/K7MDENG/", "bPxRfiCYEXAMPLEKEY"].concat()
    }
    fn github_classic() -> String {
        ["ghp", "_16C7e42F292c6912E7710c838347Ae178B4a"].concat()
    }
    fn github_fine_grained() -> String {
        let tail: String = "aB3dE5gH7jK9mN1pQ3rS5tU7vW9xY1z"
            .chars()
            .cycle()
            .take(59)
            .collect();
        format!("{}_pat_11ABCDEFG0aBcDeFgHiJkL_{tail}", "github")
    }
    fn slack_token() -> String {
        ["xox", "b-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"].concat()
    }
    fn slack_webhook() -> String {
        let path = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX";
        format!("https://hooks.slack{}{path}", ".com")
    }
    fn stripe_key() -> String {
        ["sk_", "live_", "4eC39HqLyjWDarjtT1zdp7dc"].concat()
    }
    fn google_key() -> String {
        ["AI", "zaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"].concat()
    }
    fn pem_header(kind: &str) -> String {
        format!("-----BEGIN {kind}PRIVATE KEY-----")
    }
    fn generic_value() -> String {
        ["8dyfuiRyq=vVc3RR", "r_edRk-fK__JItpZ"].concat()
    }

    fn redacted(secret: &str) -> String {
        let head: String = secret.chars().take(4).collect();
        format!("{head}…{}", secret.chars().count())
    }

    /// Scans `prefix + secret + suffix` as line 3 of a file and checks that
    /// exactly that secret is reported, by `rule`, at the right position.
    fn assert_single(rule: &str, prefix: &str, secret: &str, suffix: &str) {
        let text = format!("# settings\n\n{prefix}{secret}{suffix}\nlast = 1\n");
        let found = scan_text("conf/app.cfg", &text);
        let expected = Finding {
            file: "conf/app.cfg".into(),
            line: 3,
            column: prefix.chars().count() + 1,
            rule: rule.into(),
            redacted: redacted(secret),
            fingerprint: format!("conf/app.cfg:3:{rule}"),
        };
        assert_eq!(found, vec![expected], "in {text:?}");
    }

    #[test]
    fn each_rule_detects_its_format() {
        // AWS's documented example key contains EXAMPLE; only
        // generic-secret applies the placeholder filter.
        assert_single(
            "aws-access-key-id",
            "export AWS_ACCESS_KEY_ID=",
            &aws_key_id(),
            "",
        );
        assert_single("aws-access-key-id", "key_id: \"", &aws_key_id(), "\",");
        assert_single(
            "aws-secret-access-key",
            "aws_secret_access_key = ",
            &aws_secret(),
            "",
        );
        assert_single(
            "aws-secret-access-key",
            "  AWS_SECRET_ACCESS_KEY: \"",
            &aws_secret(),
            "\"",
        );
        assert_single(
            "aws-secret-access-key",
            "awsSecretAccessKey => '",
            &aws_secret(),
            "',",
        );
        assert_single(
            "github-token",
            "git clone https://x-access-token:",
            &github_classic(),
            "@github.com/acme/app.git",
        );
        assert_single(
            "github-token",
            "echo \"",
            &github_fine_grained(),
            "\" | gh auth login --with-token",
        );
        assert_single("slack-token", "slack_bot: ", &slack_token(), "");
        assert_single("slack-webhook", "notify_url = \"", &slack_webhook(), "\"");
        assert_single("stripe-key", "Stripe.api_key = \"", &stripe_key(), "\"");
        assert_single(
            "stripe-key",
            "STRIPE=",
            &["rk_", "test_", "51HxYzAbCdEfGhIj1234"].concat(),
            "",
        );
        assert_single(
            "google-api-key",
            "<script src=\"https://maps.googleapis.com/maps/api/js?key=",
            &google_key(),
            "\"></script>",
        );
        for kind in ["", "RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED "] {
            assert_single("private-key", "", &pem_header(kind), "");
        }
        assert_single(
            "private-key",
            "  ",
            &["-----BEGIN PGP ", "PRIVATE KEY BLOCK-----"].concat(),
            "",
        );
        assert_single(
            "generic-secret",
            "client_secret = \"",
            &generic_value(),
            "\"",
        );
    }

    #[test]
    fn generic_secret_in_code_and_config_styles() {
        let v = generic_value();
        for (prefix, suffix) in [
            ("API_TOKEN=", ""),                        // .env
            ("export DEPLOY_TOKEN=", "   # prod"),     // shell
            ("  client-secret: ", ""),                 // YAML, unquoted
            ("password: \"", "\""),                    // YAML, quoted
            ("  \"apiKey\": \"", "\","),               // JSON
            ("db.passwd = '", "'"),                    // TOML dotted key
            ("  :private_key => \"", "\","),           // Ruby
            ("  'api-key' => '", "',"),                // PHP
            ("const SERVICE_TOKEN: &str = \"", "\";"), // Rust
            ("let pwd: String = \"", "\".into();"),    // Rust, typed let
            ("credential := \"", "\""),                // Go
            ("self.api_key = \"", "\""),               // Python
        ] {
            assert_single("generic-secret", prefix, &v, suffix);
        }
    }

    #[test]
    fn specific_rule_wins_over_generic_for_the_same_span() {
        assert_single("github-token", "token = \"", &github_classic(), "\"");
        assert_single(
            "aws-secret-access-key",
            "aws_secret_access_key: ",
            &aws_secret(),
            "",
        );
        assert_single("stripe-key", "stripe_secret_key: ", &stripe_key(), "");
        assert_single("slack-token", "SLACK_TOKEN=", &slack_token(), "");
    }

    #[test]
    fn aws_secret_must_be_the_whole_value() {
        // 42 characters is not an AWS secret; the generic rule then sees a
        // value containing EXAMPLE, a placeholder.
        let text = format!("aws_secret_access_key = \"{}Zq\"\n", aws_secret());
        assert_eq!(scan_text("a.cfg", &text), vec![]);
    }

    #[test]
    fn generic_secret_filters_placeholders_and_non_random_values() {
        // Control: the bare value is reported, so the filters below are
        // what silences the variants.
        assert_single("generic-secret", "api_token = \"", "a8Kd93jfQ0zPwXyZ", "\"");
        for value in [
            "EXAMPLEa8Kd93jfQ0zPw",
            "changeme-a8Kd93jfQ0zP",
            "xxxxXXXXa8Kd93jfQ0zP",
            "YourTokenA8Kd93jfQ0z",
            "dummyA8Kd93jfQ0zPwXy",
            "placeholder-8Kd93jfQ0z",
            "REDACTED-a8Kd93jfQ0zP",
            "${DB_PASSWORD}",
            "$(vault read -field=token kv/slipway)",
            "{{ .Values.apiToken }}",
            "<your-token-here>",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "1234567890123456",              // decimal: < 3.32 bits/char
            "abcdabcdabcdabcdabcd",          // patterned: 2 bits/char
            "my-app-database-credentials",   // resource name
            "SLIPWAY_DEPLOY_TOKEN_FILE",     // env var name
            "/run/secrets/db-password-9f3K", // path
            "a8Kd93jfQ0zPwXyZ${SUFFIX}",     // template inside the literal
        ] {
            for line in [
                format!("api_token = \"{value}\""),
                format!("api_token: {value}"),
            ] {
                assert_eq!(scan_text("a.yml", &line), vec![], "{line}");
            }
        }
    }

    #[test]
    fn no_false_positives_on_ordinary_files() {
        let corpus = [
            (
                "src/deploy.rs",
                r#"use std::env;

/// Reads the deploy token from the environment.
pub fn deploy_token(cfg: &Config) -> Result<Token, env::VarError> {
    let token = env::var("SLIPWAY_DEPLOY_TOKEN")?;
    let password = std::env::var("DB_PASSWORD").unwrap_or_default();
    let api_key: Option<&str> = None;
    const MAX_TOKEN_LEN: usize = 4096;
    let password_hash = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub";
    let secret = Secret { value: token.clone(), expires_at: 1700000000 };
    let creds = Credentials { secret: cfg.secret_store.lookup_secret_value(), ..Default::default() };
    let token_fingerprint = sha256_hex(token.as_bytes());
    tracing::info!(token_len = token.len(), "loaded deploy token");
    Ok(Token::parse(&token)?)
}
"#,
            ),
            (
                "web/client.ts",
                r#"const apiKey = process.env.STRIPE_API_KEY_V2 || config.apiKey;
export const sessionToken: string = window.localStorage.getItem("tokenV2") ?? "";
const auth = { password: form.elements.Password2.value, token: await getTokenV2(), };
"#,
            ),
            (
                "Slipway.toml",
                r#"[package]
name = "slipway"
version = "0.4.2"

[database]
host = "db.internal"
user = "slipway"
password = "${DB_PASSWORD}"
password_file = "/run/secrets/db_password"
token_ttl_secs = 3600
api_key_env = "SLIPWAY_DEPLOY_API_KEY"
"#,
            ),
            (
                "deploy/values.yaml",
                r#"deploy:
  token: changeme
  registry_password: ${REGISTRY_PASSWORD}
  secretName: my-app-database-credentials
  credentials_from: vault://kv/slipway/prod
  api_key: "{{ .Values.apiKey }}"
  client_secret: <set-in-ci>
  image: ghcr.io/acme/slipway:0.4.2
"#,
            ),
            (
                "web/package-lock.toml",
                r#"[[package]]
name = "left-pad"
version = "1.3.0"
resolved = "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz"
integrity = "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQ9aZlvn+k+zo6O8bZtz5HoNNWTBgzEMpKJdqsjb7vHqW6Tw=="
checksum = "a0f3e08d8ab1c7c2b7da2e6bfd0a4a4b7d9e1f2c3b4a5968778695a4b3c2d1e0"
"integrity": "sha512-7cEb0k4P9xw8eI3m5OaQxGvJ4t3sYy3dbqUhC1M2e0wz9ruVbM7YmK8sKc6mZ9jZ4n7vXyq1hM3s6PmTb8ZaQ=="
"#,
            ),
            (
                "ids.json",
                r#"{ "request_id": "550e8400-e29b-41d4-a716-446655440000",
  "tenant": "123e4567-e89b-12d3-a456-426614174000", "trace": "4bf92f3577b34da6a3ce929d0e0e4736" }
"#,
            ),
            (
                "CHANGELOG.md",
                r#"## 0.4.2
- Fix token refresh race (3f786850e387550fdab836ed7e6dc881de23001b)
- Rotate deploy credentials on expiry, see a94a8fe5ccb19ba61c4c0873d391e987982fbbd3
* 9c1185a Handle expired password prompts
"#,
            ),
        ];
        for (file, text) in corpus {
            assert_eq!(scan_text(file, text), vec![], "{file}");
        }
    }

    #[test]
    fn findings_are_in_order_one_per_occurrence_with_char_columns() {
        let key = aws_key_id();
        let text = format!(
            "# clé d'accès: {key}\nids = [\"{key}\", \"{key}\"] # {}\n",
            google_key()
        );
        let found = scan_text("notes.txt", &text);
        let at: Vec<(usize, usize, &str)> = found
            .iter()
            .map(|f| (f.line, f.column, f.rule.as_str()))
            .collect();
        assert_eq!(
            at,
            [
                (1, 16, "aws-access-key-id"),
                (2, 9, "aws-access-key-id"),
                (2, 33, "aws-access-key-id"),
                (2, 58, "google-api-key"),
            ]
        );
        for f in &found {
            assert!(!f.redacted.contains(&key) && !f.fingerprint.contains(&key));
        }
    }

    #[test]
    fn inline_marker_silences_only_its_line() {
        let key = stripe_key();
        let text = format!(
            "STRIPE_KEY={key} # slipway:allow-secret (test-mode fixture)\nSTRIPE_KEY={key}\n"
        );
        let found = scan_text(".env", &text);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].line, found[0].rule.as_str()), (2, "stripe-key"));
    }

    /// Real findings in a few files: what the allow-list is tested against.
    fn sample_findings() -> Vec<Finding> {
        let env = format!(
            "A={}\nB={}\nC={} D={}\n",
            stripe_key(),
            slack_token(),
            github_classic(),
            aws_key_id()
        );
        let mut all = scan_text("config/app.env", &env);
        for file in [
            "tests/fixtures/a/creds.env",
            "tests/other.env",
            "docs/setup.md",
            "docs/old/setup.md",
        ] {
            let text = format!("hook: {}\ngh: {}\n", slack_webhook(), github_classic());
            all.extend(scan_text(file, &text));
        }
        assert_eq!(all.len(), 12);
        all
    }

    /// Fingerprints of the sample findings the allow-list does NOT silence.
    fn reported(allow_text: &str) -> Vec<String> {
        let allow = AllowList::parse(allow_text).expect("valid allow-list");
        let all = sample_findings();
        all.into_iter()
            .filter(|f| !allow.allows(f))
            .map(|f| f.fingerprint)
            .collect()
    }

    #[test]
    fn allow_list_forms() {
        let everything = reported("");
        let without = |gone: &[&str]| -> Vec<String> {
            everything
                .iter()
                .filter(|f| !gone.contains(&f.as_str()))
                .cloned()
                .collect()
        };
        // PATH_GLOB: `**` crosses directories, `*` does not.
        assert_eq!(
            reported("tests/fixtures/**  # vendored fixtures\ndocs/*.md\n"),
            without(&[
                "tests/fixtures/a/creds.env:1:slack-webhook",
                "tests/fixtures/a/creds.env:2:github-token",
                "docs/setup.md:1:slack-webhook",
                "docs/setup.md:2:github-token",
            ])
        );
        // PATH:LINE: every rule on that line, nothing else in the file.
        assert_eq!(
            reported("./config/app.env:3"),
            without(&[
                "config/app.env:3:github-token",
                "config/app.env:3:aws-access-key-id"
            ])
        );
        // PATH:LINE:RULE: the other rule on the same line is still reported.
        assert_eq!(
            reported("# reviewed\n\nconfig/app.env:3:github-token # rotated 2024-05"),
            without(&["config/app.env:3:github-token"])
        );
        // rule:RULE PATH_GLOB: other rules in those files are still reported.
        assert_eq!(
            reported("rule:slack-webhook docs/**"),
            without(&[
                "docs/setup.md:1:slack-webhook",
                "docs/old/setup.md:1:slack-webhook"
            ])
        );
    }

    #[test]
    fn allow_list_errors_name_the_line() {
        let cases = [
            ("# header\n\nsrc/[abc\n", 3, "invalid path glob"),
            ("ok/**\nsrc/main.rs:twelve\n", 2, "LINE `twelve`"),
            ("src/main.rs:0", 1, "LINE `0`"),
            ("a\nb\nsrc/main.rs:3:aws-key", 3, "unknown rule `aws-key`"),
            ("rule:nope docs/**", 1, "unknown rule `nope`"),
            ("rule:github-token", 1, "expected `rule:RULE PATH_GLOB`"),
            ("rule:github-token docs/{a,b", 1, "invalid path glob"),
            (":12", 1, "missing path"),
        ];
        for (text, line, needle) in cases {
            let err = AllowList::parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.message.contains(needle), "{text:?}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!(".slipway-secrets-allow line {line}: "))
            );
        }
    }

    #[test]
    fn scan_files_skips_what_it_should() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let write = |rel: &str, bytes: &[u8]| {
            let path = root.join(rel);
            fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
            fs::write(path, bytes).expect("write");
        };
        let line = format!("key = {}\n", aws_key_id());
        write("src/config.rs", format!("// config\n{line}").as_bytes());
        write("tests/fixtures/creds.env", line.as_bytes());
        // Latin-1 text is not binary and is still scanned.
        write(
            "legacy.ini",
            &[b"caf\xe9 = 1\n".as_slice(), line.as_bytes()].concat(),
        );
        write(
            "assets/logo.png",
            &[b"\x89PNG\0\0".as_slice(), line.as_bytes()].concat(),
        );
        let mut big = line.clone().into_bytes();
        big.resize(MAX_FILE_BYTES as usize + 1, b'\n');
        write("dump.sql", &big);
        write(ALLOW_FILE_NAME, line.as_bytes());
        write("sub/.slipway-secrets-allow", line.as_bytes());
        fs::create_dir_all(root.join("vendor/submodule")).expect("mkdir");
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("src/config.rs"), root.join("link.rs"))
            .expect("symlink");

        let files: Vec<String> = [
            "src/config.rs",
            "tests/fixtures/creds.env",
            "legacy.ini",
            "assets/logo.png",
            "dump.sql",
            "deleted.env",
            ALLOW_FILE_NAME,
            "sub/.slipway-secrets-allow",
            "vendor/submodule",
            #[cfg(unix)]
            "link.rs",
        ]
        .map(String::from)
        .to_vec();
        let allow = AllowList::parse("tests/fixtures/**").expect("valid allow-list");
        let report = scan_files(root, &files, &allow).expect("scan");

        let at: Vec<&str> = report
            .findings
            .iter()
            .map(|f| f.fingerprint.as_str())
            .collect();
        assert_eq!(
            at,
            [
                "src/config.rs:2:aws-access-key-id",
                "legacy.ini:2:aws-access-key-id"
            ]
        );
        assert_eq!(report.allowed, 1);
        assert_eq!(report.files_scanned, 3);
        assert_eq!(report.files_skipped, files.len() - 3);
    }

    #[test]
    fn rules_are_named_and_generic_is_last() {
        let names: Vec<&str> = rules().iter().map(|r| r.name).collect();
        assert_eq!(names.last(), Some(&GENERIC));
        for (i, r) in rules().iter().enumerate() {
            assert!(r.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
            assert!(!r.description.is_empty());
            assert!(!names[..i].contains(&r.name), "duplicate {}", r.name);
        }
    }

    #[test]
    fn reports_are_serializable() {
        fn serializable<T: Serialize>() {}
        serializable::<Finding>();
        serializable::<ScanReport>();
    }

    #[test]
    fn this_source_file_is_clean() {
        assert_eq!(
            scan_text("src/secret_scan.rs", include_str!("secret_scan.rs")),
            vec![]
        );
    }
}
