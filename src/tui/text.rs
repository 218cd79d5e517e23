//! Text layout helpers: display width, word wrap, and the layout of a fix
//! so that a command is never broken across lines when it fits one.

use ratatui::text::Span;

/// Display width in terminal cells.
pub fn width(s: &str) -> usize {
    Span::raw(s).width()
}

/// Split into pieces of at most `n` cells.
pub fn chunks(s: &str, n: usize) -> Vec<String> {
    let n = n.max(1);
    let mut out = vec![];
    let mut cur = String::new();
    // The width so far, kept as it grows: measuring `cur` again for every
    // character made a long word quadratic.
    let mut cur_w = 0;
    for ch in s.chars() {
        let cw = width(ch.encode_utf8(&mut [0; 4]));
        if cur_w + cw > n && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            cur_w = 0;
        }
        cur.push(ch);
        cur_w += cw;
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

/// Greedy word wrap to `w` cells; words longer than a line are broken.
pub fn wrap_words(s: &str, w: usize) -> Vec<String> {
    wrap_hard(s, w, w)
}

/// Word wrap with a different width for the first line (a value after its
/// key), by textwrap: at spaces; a word longer than a line is broken after
/// one of its hyphens (`istio-reader-` / `service-account`), and only
/// a word without one where it must.
pub fn wrap_hard(s: &str, first: usize, rest: usize) -> Vec<String> {
    let (first, rest) = (first.max(1), rest.max(1));
    if s.trim().is_empty() {
        return vec![String::new()];
    }
    // textwrap wraps to one width: the narrower line gets an indent of
    // placeholders, taken off again.
    let w = first.max(rest);
    let (pad_first, pad_rest) = (" ".repeat(w - first), " ".repeat(w - rest));
    let opts = textwrap::Options::new(w)
        .word_separator(textwrap::WordSeparator::AsciiSpace)
        .word_splitter(textwrap::WordSplitter::HyphenSplitter)
        .initial_indent(&pad_first)
        .subsequent_indent(&pad_rest)
        .break_words(true);
    textwrap::wrap(s, opts)
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let pad = if i == 0 { &pad_first } else { &pad_rest };
            l.strip_prefix(pad.as_str()).unwrap_or(l).to_string()
        })
        .collect()
}

/// A unit of a fix for the layout: a word of prose or a whole command.
#[derive(Debug, Clone, PartialEq)]
pub enum Atom {
    Word(String),
    /// `pre` and `post` are punctuation around the command (`(`, `),`, `;`).
    Command {
        pre: String,
        words: Vec<String>,
        post: String,
    },
}

impl Atom {
    pub fn width(&self) -> usize {
        match self {
            Atom::Word(w) => width(w),
            Atom::Command { pre, words, post } => {
                width(pre) + width(&words.join(" ")) + width(post)
            }
        }
    }
}

const COMMANDS: &[&str] = &["kubectl", "istioctl", "openssl", "helm", "step", "curl"];

/// Cut a fix into prose words and commands. A command starts at `kubectl`,
/// `istioctl`, … and runs to the end, to a word ending in `,` or `;`, to a
/// `(` that opens a remark, or to the `)` closing the one it opened in.
pub fn hint_atoms(h: &str) -> Vec<Atom> {
    let words: Vec<&str> = h.split(' ').filter(|w| !w.is_empty()).collect();
    let mut out = vec![];
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let bare = w.trim_start_matches('(');
        if !COMMANDS.contains(&bare) {
            out.push(Atom::Word(w.to_string()));
            i += 1;
            continue;
        }
        let pre = w[..w.len() - bare.len()].to_string();
        let opened = !pre.is_empty();
        let mut cmd: Vec<String> = vec![bare.to_string()];
        let mut post = String::new();
        i += 1;
        // The command word itself may close it ("(istioctl),").
        let mut done = ends_command(bare, opened).map(|(word, p)| {
            cmd[0] = word;
            post = p;
        });
        while done.is_none() && i < words.len() {
            let w = words[i];
            if w.starts_with('(') && !opened {
                break;
            }
            i += 1;
            match ends_command(w, opened) {
                Some((word, p)) => {
                    cmd.push(word);
                    post = p;
                    done = Some(());
                }
                None => cmd.push(w.to_string()),
            }
        }
        cmd.retain(|c| !c.is_empty());
        out.push(Atom::Command {
            pre,
            words: cmd,
            post,
        });
    }
    out
}

/// If `w` ends a command, the word without its closing punctuation and that punctuation.
fn ends_command(w: &str, opened: bool) -> Option<(String, String)> {
    let closers: &[char] = if opened {
        &[',', ';', ')']
    } else {
        &[',', ';']
    };
    let trimmed = w.trim_end_matches(closers);
    if trimmed.len() == w.len() {
        return None;
    }
    // `-p='[..]'` style values end in quotes/brackets, never in these; a
    // trailing `)` without an opening `(` in the command is part of it.
    Some((trimmed.to_string(), w[trimmed.len()..].to_string()))
}

/// Shell words of a command: split at spaces outside quotes, so a quoted
/// JSON patch stays one word (a line break inside quotes would change it).
pub fn shell_words(c: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for ch in c.chars() {
        match (quote, ch) {
            (None, ' ') => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                continue;
            }
            (None, '\'' | '"') => quote = Some(ch),
            (Some(q), _) if q == ch => quote = None,
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Lay one command out in lines of at most `avail` cells, broken only
/// between shell words, each broken line ending in ` \` and the next one
/// indented, so that the whole still pastes as one command.
pub fn layout_command(c: &str, avail: usize) -> Vec<Vec<(String, Kind)>> {
    let avail = avail.max(10);
    let words = shell_words(c);
    let mut lines: Vec<Vec<(String, Kind)>> = vec![vec![]];
    let mut col = 0usize;
    for (i, word) in words.iter().enumerate() {
        let last = i + 1 == words.len();
        let need = width(word) + if last { 0 } else { 2 };
        if col > 0 && col + 1 + need > avail {
            lines
                .last_mut()
                .expect("a line")
                .push((" \\".into(), Kind::Continuation));
            lines.push(vec![("  ".into(), Kind::Prose)]);
            col = 2;
        } else if col > 0 {
            lines
                .last_mut()
                .expect("a line")
                .push((" ".into(), Kind::Prose));
            col += 1;
        }
        if col + width(word) > avail {
            // A quoted JSON patch wider than the pane breaks between JSON
            // tokens: the line break lands inside the quotes as JSON
            // whitespace, so the pasted command means the same.
            if let Some(pieces) =
                json_lines(word, avail.saturating_sub(col), avail.saturating_sub(2))
            {
                for (k, piece) in pieces.into_iter().enumerate() {
                    if k > 0 {
                        lines.push(vec![("  ".into(), Kind::Prose)]);
                        col = 2;
                    }
                    col += width(&piece);
                    lines.last_mut().expect("a line").push((piece, Kind::Code));
                }
                continue;
            }
            // An unquoted word is split with a bare `\` (the shell joins
            // the pieces), after a `=`, `:`, `/`, `,` or `-` where it can.
            if !word.contains(['\'', '"']) {
                put_long(&mut lines, &mut col, word.clone(), avail);
                continue;
            }
            // Any other quoted word wider than the pane cannot take a ` \`
            // inside its quotes: it is shown whole, cut at the pane's
            // edge into pieces, and `y` copies it as one line.
            let first = avail.saturating_sub(col).max(1);
            let head: String = word.chars().take(first).collect();
            let rest: String = word.chars().skip(first).collect();
            lines.last_mut().expect("a line").push((head, Kind::Code));
            for piece in chunks(&rest, avail.saturating_sub(2).max(1)) {
                col = 2 + width(&piece);
                lines.push(vec![("  ".into(), Kind::Prose), (piece, Kind::Code)]);
            }
            continue;
        }
        lines
            .last_mut()
            .expect("a line")
            .push((word.clone(), Kind::Code));
        col += width(word);
    }
    lines
}

/// A single-quoted JSON value (`'[{"op": …}]'`) in lines of at most `first`
/// then `rest` cells, broken only after a `,`, `:`, `[` or `{` outside JSON
/// strings; `None` for any other word. A token longer than a line stays whole.
fn json_lines(word: &str, first: usize, rest: usize) -> Option<Vec<String>> {
    let inner = word.strip_prefix('\'')?.strip_suffix('\'')?;
    if !(inner.starts_with('[') || inner.starts_with('{')) || inner.contains('\'') {
        return None;
    }
    // The word cut into pieces that each end at a break opportunity.
    let mut pieces = vec![];
    let (mut cur, mut in_str, mut esc) = (String::new(), false, false);
    for ch in word.chars() {
        cur.push(ch);
        match (in_str, esc, ch) {
            (true, true, _) => esc = false,
            (true, false, '\\') => esc = true,
            (true, false, '"') => in_str = false,
            (false, _, '"') => in_str = true,
            (false, _, ',' | ':' | '[' | '{') => pieces.push(std::mem::take(&mut cur)),
            _ => {}
        }
    }
    if in_str {
        return None;
    }
    pieces.push(cur);
    let mut out: Vec<String> = vec![String::new()];
    for p in pieces {
        let room = if out.len() == 1 { first } else { rest };
        let cur = out.last_mut().expect("a line");
        if !cur.is_empty() && width(cur) + width(&p) > room {
            // The next line starts at a token: no leading blank to carry.
            out.push(p.trim_start().to_string());
        } else {
            cur.push_str(&p);
        }
    }
    out.retain(|l| !l.is_empty());
    Some(out)
}

/// Kinds of text in a laid-out fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prose,
    Code,
    /// The ` \` of a continued command.
    Continuation,
}

/// Lay a fix out in lines of at most `avail` cells: prose wraps at words; a
/// command that fits a line is never broken; a longer one starts on its own
/// line and continues with ` \` so that it still pastes as one command.
pub fn layout_hint(h: &str, avail: usize) -> Vec<Vec<(String, Kind)>> {
    let avail = avail.max(10);
    let mut lines: Vec<Vec<(String, Kind)>> = vec![vec![]];
    let mut col = 0usize;
    fn put(lines: &mut [Vec<(String, Kind)>], col: &mut usize, s: String, kind: Kind, space: bool) {
        let cur = lines.last_mut().expect("a line");
        if space && *col > 0 {
            cur.push((" ".into(), Kind::Prose));
            *col += 1;
        }
        *col += width(&s);
        cur.push((s, kind));
    }
    for atom in hint_atoms(h) {
        let aw = atom.width();
        if col > 0 && col + 1 + aw > avail {
            lines.push(vec![]);
            col = 0;
        }
        match atom {
            Atom::Word(word) => {
                if width(&word) > avail {
                    for c in chunks(&word, avail) {
                        if col > 0 {
                            lines.push(vec![]);
                            col = 0;
                        }
                        put(&mut lines, &mut col, c, Kind::Prose, false);
                    }
                } else {
                    put(&mut lines, &mut col, word, Kind::Prose, true);
                }
            }
            Atom::Command { pre, words, post } => {
                if !pre.is_empty() {
                    put(&mut lines, &mut col, pre, Kind::Prose, true);
                }
                let n = words.len();
                let mut first = true;
                for (i, word) in words.into_iter().enumerate() {
                    let last = i + 1 == n;
                    let ww = width(&word);
                    let need = if last { ww + width(&post) } else { ww + 2 };
                    let space = !first;
                    if !first && col + 1 + need > avail && aw > avail {
                        put(
                            &mut lines,
                            &mut col,
                            " \\".into(),
                            Kind::Continuation,
                            false,
                        );
                        lines.push(vec![("  ".into(), Kind::Prose)]);
                        col = 2;
                        put_long(&mut lines, &mut col, word, avail);
                    } else if first && ww + 2 > avail {
                        put_long(&mut lines, &mut col, word, avail);
                    } else {
                        let sp = space || (first && col > 0 && !ends_open(&lines));
                        put(&mut lines, &mut col, word, Kind::Code, sp);
                    }
                    first = false;
                }
                if !post.is_empty() {
                    put(&mut lines, &mut col, post, Kind::Prose, false);
                }
            }
        }
    }
    lines.retain(|l| !l.is_empty());
    lines
}

/// A command word longer than a line: broken with a bare `\\` (the shell
/// joins the pieces back into one word) and continued at the line's start,
/// preferably after a `=`, `:`, `/`, `,` or `-`.
fn put_long(lines: &mut Vec<Vec<(String, Kind)>>, col: &mut usize, word: String, avail: usize) {
    let mut room = avail.saturating_sub(*col + 1).max(4);
    let mut rest = word;
    loop {
        if width(&rest) <= room + 1 {
            *col += width(&rest);
            lines.last_mut().expect("a line").push((rest, Kind::Code));
            return;
        }
        let (head, tail) = split_word(&rest, room);
        lines.last_mut().expect("a line").push((head, Kind::Code));
        lines
            .last_mut()
            .expect("a line")
            .push(("\\".into(), Kind::Continuation));
        lines.push(vec![]);
        *col = 0;
        rest = tail;
        room = avail.saturating_sub(1).max(4);
    }
}

/// Split a word to fit `room` cells, after a natural separator when there is one.
fn split_word(w: &str, room: usize) -> (String, String) {
    let chars: Vec<char> = w.chars().collect();
    let mut best = None;
    let mut cells = 0;
    for (i, ch) in chars.iter().enumerate() {
        cells += width(ch.encode_utf8(&mut [0; 4]));
        if cells > room {
            break;
        }
        if "=:/,-".contains(*ch) && i + 1 >= room / 3 && i + 1 < chars.len() {
            best = Some(i + 1);
        }
    }
    let at = best.unwrap_or_else(|| chunks(w, room)[0].chars().count());
    (chars[..at].iter().collect(), chars[at..].iter().collect())
}

/// The line ends with an opening `(` the command must follow without a space.
fn ends_open(lines: &[Vec<(String, Kind)>]) -> bool {
    lines
        .last()
        .and_then(|l| l.last())
        .is_some_and(|(s, _)| s.ends_with('('))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(lines: &[Vec<(String, Kind)>]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.iter().map(|(s, _)| s.as_str()).collect())
            .collect()
    }

    const RBAC: &str = "bind it to Istio's reader role: kubectl --context <remote> create clusterrolebinding istio-reader-tokenreview --clusterrole=istio-reader-clusterrole-istio-system --serviceaccount=istio-system:istio-reader-service-account (the ClusterRole must allow create on tokenreviews.authentication.k8s.io)";

    #[test]
    fn a_command_breaks_between_shell_words_never_inside_quotes() {
        let c = r#"kubectl --context lab-remote patch clusterrole istio-reader-clusterrole-istio-system --type=json -p '[{"op": "add", "path": "/rules/-"}]'"#;
        assert_eq!(
            shell_words(c).last().unwrap(),
            r#"-p"#.replace("-p", "'[{\"op\": \"add\", \"path\": \"/rules/-\"}]'").as_str()
        );
        let lines = layout_command(c, 40);
        assert!(lines.len() > 1);
        // Joined back without the continuations, it is the same command.
        let joined: String = lines
            .iter()
            .map(|l| {
                l.iter()
                    .filter(|(_, k)| *k != Kind::Continuation)
                    .map(|(s, _)| s.as_str())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(joined, c);
        for l in &lines[..lines.len() - 1] {
            assert_eq!(l.last().unwrap().1, Kind::Continuation);
        }
        // A quoted JSON patch wider than the pane breaks between JSON
        // tokens, never inside one: each line ends after `,`, `:`, `[` or `{`.
        let long = layout_command(c, 20);
        let shown: Vec<String> = long
            .iter()
            .map(|l| l.iter().map(|(s, _)| s.as_str()).collect())
            .collect();
        let at = shown
            .iter()
            .position(|l| l.contains("'["))
            .expect("the patch");
        for l in &shown[at..shown.len() - 1] {
            assert!(l.ends_with([',', ':', '[', '{']), "{l:?} in {shown:#?}");
        }
        assert!(shown.iter().all(|l| width(l) <= 20 + 2), "{shown:#?}");
        // Pasted, the lines are the same JSON: the breaks are whitespace in it.
        let json: String = shown[at..].concat();
        let json = json[json.find('\'').unwrap() + 1..json.rfind('\'').unwrap()].to_string();
        let v: serde_json::Value = serde_json::from_str(&json).expect("still JSON");
        assert_eq!(v[0]["path"], "/rules/-");
    }

    #[test]
    fn commands_are_found_with_their_punctuation() {
        let a = hint_atoms("inject it (istioctl install --set x=<id>), or pass --cluster-id");
        assert_eq!(
            a[2],
            Atom::Command {
                pre: "(".into(),
                words: vec![
                    "istioctl".into(),
                    "install".into(),
                    "--set".into(),
                    "x=<id>".into()
                ],
                post: "),".into()
            }
        );
        assert_eq!(a[3], Atom::Word("or".into()));
        let a = hint_atoms(
            "read the log: kubectl logs deploy/istiod | grep -i 'authenticate'; check istioctl remote-clusters",
        );
        let Atom::Command { words, post, .. } = &a[3] else {
            panic!("{a:?}")
        };
        assert_eq!(
            words.join(" "),
            "kubectl logs deploy/istiod | grep -i 'authenticate'"
        );
        assert_eq!(post, ";");
        let a = hint_atoms(RBAC);
        assert!(
            matches!(&a[6], Atom::Command { words, .. } if words.len() == 8),
            "{a:?}"
        );
        assert_eq!(a[7], Atom::Word("(the".into()));
    }

    #[test]
    fn a_command_that_fits_is_never_broken() {
        let h = "recreate the service account: kubectl --context <remote> -n istio-system create serviceaccount gw (then restart the gateway)";
        let cmd = "kubectl --context <remote> -n istio-system create serviceaccount gw";
        for avail in [cmd.len(), cmd.len() + 5, 80, 120] {
            let lines = plain(&layout_hint(h, avail));
            assert!(lines.iter().any(|l| l.contains(cmd)), "{avail}: {lines:#?}");
            assert!(
                lines.iter().all(|l| width(l) <= avail),
                "{avail}: {lines:#?}"
            );
        }
    }

    #[test]
    fn a_long_command_continues_with_backslashes() {
        let lines = plain(&layout_hint(RBAC, 60));
        assert!(lines.iter().all(|l| width(l) <= 60), "{lines:#?}");
        let joined: String = lines
            .iter()
            .map(|l| l.trim_end_matches(" \\").trim_start().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains("kubectl --context <remote> create clusterrolebinding istio-reader-tokenreview --clusterrole=istio-reader-clusterrole-istio-system --serviceaccount=istio-system:istio-reader-service-account"), "{lines:#?}");
        assert!(
            lines.iter().filter(|l| l.ends_with(" \\")).count() >= 2,
            "{lines:#?}"
        );
        assert_eq!(lines[0], "bind it to Istio's reader role:");
    }

    #[test]
    fn a_command_word_longer_than_the_pane_is_split_with_a_bare_backslash() {
        let lines = plain(&layout_hint(RBAC, 36));
        assert!(lines.iter().all(|l| width(l) <= 36), "{lines:#?}");
        // Join as a shell would: ` \<newline>` separates words, `\<newline>` joins the pieces of one.
        let mut shell = String::new();
        for l in &lines {
            if let Some(x) = l.strip_suffix(" \\") {
                shell.push_str(x);
                shell.push(' ');
            } else if let Some(x) = l.strip_suffix('\\') {
                shell.push_str(x);
            } else {
                shell.push_str(l);
                shell.push(' ');
            }
        }
        let shell = shell.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(shell.contains("--clusterrole=istio-reader-clusterrole-istio-system --serviceaccount=istio-system:istio-reader-service-account"), "{shell}\n{lines:#?}");
    }

    #[test]
    fn wrap_breaks_long_words_and_respects_widths() {
        let l = wrap_hard(
            "sha256 2fe950da893574eeed2b1b6588a9edee18f2532306baa8fa166cd8cf61309a8c",
            20,
            30,
        );
        assert!(
            width(&l[0]) <= 20 && l.iter().skip(1).all(|p| width(p) <= 30),
            "{l:?}"
        );
        assert_eq!(
            l.concat().replace("sha256", "").replace(' ', ""),
            "2fe950da893574eeed2b1b6588a9edee18f2532306baa8fa166cd8cf61309a8c"
        );
        assert_eq!(wrap_words("", 10), vec![String::new()]);
    }

    #[test]
    fn wrap_keeps_words_whole_and_breaks_names_at_their_hyphens() {
        // The detail pane's old cut: `istio-re` / `ader-service-account`.
        let s = "\"system:serviceaccount:istio-system:istio-reader-service-account\" may not create tokenreviews";
        // From 30 cells on, every piece between hyphens fits a line.
        for w in [30, 33, 38, 44, 60] {
            let lines = wrap_words(s, w);
            for l in &lines {
                assert!(width(l) <= w, "{w}: {lines:?}");
            }
            let words: Vec<&str> = s.split(['-', ' ']).collect();
            for l in &lines {
                for piece in l.split(['-', ' ']) {
                    assert!(
                        piece.is_empty() || words.contains(&piece),
                        "{w}: {piece:?} is a piece of a word: {lines:?}"
                    );
                }
            }
            assert_eq!(lines.join(" ").replace("- ", "-"), s, "{w}");
        }
        assert_eq!(
            wrap_hard("the remote secret's identity", 8, 20),
            vec!["the", "remote secret's", "identity"]
        );
    }
}
