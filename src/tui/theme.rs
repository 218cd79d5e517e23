//! Themes: semantic palette slots (pass, fail, accent, muted, …) so the
//! renderers pick styles by meaning, never by colour. The built-in themes are
//! JSON files under `themes/`, compiled in.

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;
use std::str::FromStr;

/// The built-in themes, in the order `t` cycles through them.
pub const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../../themes/default.json")),
    ("light", include_str!("../../themes/light.json")),
    ("colorblind", include_str!("../../themes/colorblind.json")),
    ("mono", include_str!("../../themes/mono.json")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.json"),
    ),
];

/// Every slot a theme sets, as theme files name them.
pub const SLOTS: &[&str] = &[
    "text",
    "background",
    "pass",
    "warn",
    "fail",
    "skipped",
    "running",
    "pending",
    "accent",
    "label",
    "muted",
    "code",
    "border",
    "border_focus",
    "selection",
    "changed",
    "title",
];

/// Names accepted by `--theme`.
pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// One slot as written in a theme file: colours by name (`green`,
/// `lightred`), index (`244`) or `#rrggbb`, plus text modifiers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotSpec {
    fg: Option<String>,
    bg: Option<String>,
    #[serde(default)]
    bold: bool,
    #[serde(default)]
    dim: bool,
    #[serde(default)]
    italic: bool,
    #[serde(default)]
    underline: bool,
    #[serde(default)]
    reverse: bool,
}

impl SlotSpec {
    fn style(&self, slot: &str) -> Result<Style, String> {
        let color = |v: &Option<String>, which: &str| -> Result<Option<Color>, String> {
            v.as_deref()
                .map(|s| {
                    Color::from_str(s).map_err(|_| {
                        format!(
                            "slot {slot}: {which} {s:?} is not a colour (a name, 0-255 or #rrggbb)"
                        )
                    })
                })
                .transpose()
        };
        let mut st = Style::new();
        if let Some(c) = color(&self.fg, "fg")? {
            st = st.fg(c);
        }
        if let Some(c) = color(&self.bg, "bg")? {
            st = st.bg(c);
        }
        for (on, m) in [
            (self.bold, Modifier::BOLD),
            (self.dim, Modifier::DIM),
            (self.italic, Modifier::ITALIC),
            (self.underline, Modifier::UNDERLINED),
            (self.reverse, Modifier::REVERSED),
        ] {
            if on {
                st = st.add_modifier(m);
            }
        }
        Ok(st)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    description: String,
    text: SlotSpec,
    background: SlotSpec,
    pass: SlotSpec,
    warn: SlotSpec,
    fail: SlotSpec,
    skipped: SlotSpec,
    running: SlotSpec,
    pending: SlotSpec,
    accent: SlotSpec,
    label: SlotSpec,
    muted: SlotSpec,
    code: SlotSpec,
    border: SlotSpec,
    border_focus: SlotSpec,
    selection: SlotSpec,
    changed: SlotSpec,
    title: SlotSpec,
}

/// A theme resolved to ratatui styles, one per semantic slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    pub description: String,
    /// Ordinary text.
    pub text: Style,
    /// Applied to the whole screen first (a light theme sets its background here).
    pub background: Style,
    pub pass: Style,
    pub warn: Style,
    pub fail: Style,
    /// Skipped / blocked steps: greyed.
    pub skipped: Style,
    pub running: Style,
    /// Steps that have not started yet.
    pub pending: Style,
    pub accent: Style,
    /// Headings and field names.
    pub label: Style,
    pub muted: Style,
    /// Commands in a fix.
    pub code: Style,
    pub border: Style,
    pub border_focus: Style,
    /// The selected step's row.
    pub selection: Style,
    /// Marker for steps whose status changed since the previous run.
    pub changed: Style,
    /// The `meshtrace` badge in the header.
    pub title: Style,
}

impl Theme {
    pub fn parse(json: &str) -> Result<Theme, String> {
        let f: ThemeFile = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Ok(Theme {
            text: f.text.style("text")?,
            background: f.background.style("background")?,
            pass: f.pass.style("pass")?,
            warn: f.warn.style("warn")?,
            fail: f.fail.style("fail")?,
            skipped: f.skipped.style("skipped")?,
            running: f.running.style("running")?,
            pending: f.pending.style("pending")?,
            accent: f.accent.style("accent")?,
            label: f.label.style("label")?,
            muted: f.muted.style("muted")?,
            code: f.code.style("code")?,
            border: f.border.style("border")?,
            border_focus: f.border_focus.style("border_focus")?,
            selection: f.selection.style("selection")?,
            changed: f.changed.style("changed")?,
            title: f.title.style("title")?,
            name: f.name,
            description: f.description,
        })
    }

    /// A built-in theme by name.
    pub fn builtin(name: &str) -> Option<Theme> {
        BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, json)| Theme::parse(json).expect("built-in themes parse (tested)"))
    }

    /// The style of a slot by its name in a theme file.
    fn slot_mut(&mut self, slot: &str) -> Option<&mut Style> {
        Some(match slot {
            "text" => &mut self.text,
            "background" => &mut self.background,
            "pass" => &mut self.pass,
            "warn" => &mut self.warn,
            "fail" => &mut self.fail,
            "skipped" => &mut self.skipped,
            "running" => &mut self.running,
            "pending" => &mut self.pending,
            "accent" => &mut self.accent,
            "label" => &mut self.label,
            "muted" => &mut self.muted,
            "code" => &mut self.code,
            "border" => &mut self.border,
            "border_focus" => &mut self.border_focus,
            "selection" => &mut self.selection,
            "changed" => &mut self.changed,
            "title" => &mut self.title,
            _ => return None,
        })
    }

    pub fn status(&self, s: crate::model::Status) -> Style {
        use crate::model::Status;
        match s {
            Status::Pass => self.pass,
            Status::Warn => self.warn,
            Status::Fail => self.fail,
            Status::Skipped => self.skipped,
        }
    }
}

/// A user's theme file (`--theme-file PATH`): the slots it sets, each
/// replacing that slot of the theme it is laid over; every other slot is
/// the base theme's. Checked whole when read, so a bad file stops meshtrace
/// before anything runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Overrides {
    pub name: String,
    pub description: String,
    pub slots: Vec<(String, Style)>,
}

impl Overrides {
    /// Parses a theme file's text; `file` names it in every error.
    pub fn parse(json: &str, file: &str) -> Result<Overrides, String> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("{file}: not JSON: {e}"))?;
        let serde_json::Value::Object(map) = v else {
            return Err(format!(
                "{file}: a theme is a JSON object of slots, e.g. {{\"fail\": {{\"fg\": \"red\"}}}}"
            ));
        };
        let stem = std::path::Path::new(file)
            .file_stem()
            .map_or_else(|| file.to_string(), |s| s.to_string_lossy().into_owned());
        let mut out = Overrides {
            name: stem,
            description: format!("from {file}"),
            slots: vec![],
        };
        for (key, value) in map {
            match key.as_str() {
                "name" | "description" => {
                    let serde_json::Value::String(s) = value else {
                        return Err(format!("{file}: {key:?} must be a string"));
                    };
                    if key == "name" {
                        out.name = s;
                    } else {
                        out.description = s;
                    }
                }
                slot if SLOTS.contains(&slot) => {
                    let spec: SlotSpec = serde_json::from_value(value)
                        .map_err(|e| format!("{file}: slot {slot}: {e}"))?;
                    let style = spec.style(slot).map_err(|e| format!("{file}: {e}"))?;
                    out.slots.push((key, style));
                }
                other => {
                    return Err(format!(
                        "{file}: unknown slot {other:?}; the slots are {}",
                        SLOTS.join(", ")
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Reads and parses `path`.
    pub fn load(path: &str) -> Result<Overrides, String> {
        let json = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        Overrides::parse(&json, path)
    }

    /// `base` with this file's slots laid over it.
    pub fn over(&self, base: &Theme) -> Theme {
        let mut t = base.clone();
        t.name = self.name.clone();
        t.description = self.description.clone();
        for (slot, style) in &self.slots {
            if let Some(s) = t.slot_mut(slot) {
                *s = *style;
            }
        }
        t
    }
}

/// [`cycle`], with a user's theme file laid over `name` first when given.
/// `NO_COLOR` still means no colour: mono alone, the file ignored.
pub fn cycle_with(name: &str, user: Option<&Overrides>, no_color: bool) -> Vec<Theme> {
    let mut themes = cycle(name, no_color);
    if let (Some(u), false) = (user, no_color) {
        let mine = u.over(&themes[0]);
        themes.insert(0, mine);
    }
    themes
}

/// The themes `t` cycles through, starting with `name`. With `no_color`
/// (the NO_COLOR convention) only `mono` is offered, whatever was asked.
pub fn cycle(name: &str, no_color: bool) -> Vec<Theme> {
    if no_color {
        return vec![Theme::builtin("mono").expect("mono is built in")];
    }
    let start = BUILTIN.iter().position(|(n, _)| *n == name).unwrap_or(0);
    (0..BUILTIN.len())
        .map(|i| Theme::builtin(BUILTIN[(start + i) % BUILTIN.len()].0).expect("built in"))
        .collect()
}

/// `NO_COLOR` set to a non-empty value: no colour, as the text output does.
/// no-color.org: "when present and not an empty string"; `NO_COLOR=` is unset.
pub fn no_color_env() -> bool {
    no_color(std::env::var_os("NO_COLOR").as_deref())
}

/// The NO_COLOR rule on a value of the variable.
pub fn no_color(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_counts_only_when_not_empty() {
        use std::ffi::OsStr;
        assert!(!no_color(None));
        assert!(!no_color(Some(OsStr::new(""))));
        assert!(no_color(Some(OsStr::new("1"))));
        assert!(
            no_color(Some(OsStr::new("0"))),
            "any non-empty value, even 0"
        );
    }

    #[test]
    fn every_builtin_theme_parses_and_is_named_after_its_file() {
        assert!(BUILTIN.len() >= 4);
        for (name, json) in BUILTIN {
            let t = Theme::parse(json).unwrap_or_else(|e| panic!("theme {name}: {e}"));
            assert_eq!(t.name, *name);
            assert!(!t.description.is_empty());
        }
        for n in ["default", "light", "colorblind", "mono", "high-contrast"] {
            assert!(names().contains(&n), "{n} is built in");
        }
    }

    #[test]
    fn mono_has_no_colour_and_distinct_status_styles() {
        let t = Theme::builtin("mono").unwrap();
        for st in [
            t.text,
            t.background,
            t.pass,
            t.warn,
            t.fail,
            t.skipped,
            t.running,
            t.pending,
            t.accent,
            t.label,
            t.muted,
            t.code,
            t.border,
            t.border_focus,
            t.selection,
            t.changed,
            t.title,
        ] {
            assert_eq!(st.fg, None);
            assert_eq!(st.bg, None);
        }
        // Status stays readable without colour: fail, warn and skipped differ from pass by modifiers.
        assert_ne!(t.fail, t.pass);
        assert_ne!(t.warn, t.pass);
        assert_ne!(t.skipped, t.pass);
    }

    #[test]
    fn colorblind_avoids_red_and_green() {
        let t = Theme::builtin("colorblind").unwrap();
        for st in [t.pass, t.fail, t.warn] {
            let Some(Color::Rgb(r, g, b)) = st.fg else {
                panic!("colorblind uses exact colours")
            };
            // Neither pure-red-ish nor pure-green-ish: the two hues red-green colour blindness confuses.
            assert!(!(r > 150 && g < 90 && b < 90), "red in colorblind theme");
            assert!(!(g > 150 && r < 90 && b < 90), "green in colorblind theme");
        }
    }

    /// ANSI colour 8 (bright black) is the background in Solarized Dark and
    /// others: a step in it disappears. The default theme's step states
    /// take the terminal's own foreground (dimmed for skipped and pending).
    #[test]
    fn default_step_states_avoid_ansi_8() {
        let t = Theme::builtin("default").unwrap();
        for (slot, st) in [
            ("pass", t.pass),
            ("warn", t.warn),
            ("fail", t.fail),
            ("skipped", t.skipped),
            ("running", t.running),
            ("pending", t.pending),
        ] {
            assert!(
                !matches!(
                    st.fg,
                    Some(Color::DarkGray | Color::Indexed(8) | Color::Black)
                ),
                "{slot}: {:?}",
                st.fg
            );
        }
        assert!(
            t.skipped
                .add_modifier
                .contains(ratatui::style::Modifier::DIM)
        );
    }

    #[test]
    fn bad_colour_names_the_slot() {
        let json = BUILTIN[0].1.replace("\"green\"", "\"greenish\"");
        let err = Theme::parse(&json).unwrap_err();
        assert!(err.contains("pass") && err.contains("greenish"), "{err}");
    }

    /// The blocked (skipped) steps, and the text around them, must stay
    /// readable on dark, light and Solarized backgrounds: no ANSI colour 8
    /// (bright black, Solarized Dark's background) or 0 in any built-in
    /// theme's text-carrying slot, and a light theme's blocked steps darker
    /// than its background.
    #[test]
    fn no_builtin_theme_draws_text_in_ansi_8() {
        for (name, _) in BUILTIN {
            let t = Theme::builtin(name).unwrap();
            for (slot, st) in [
                ("skipped", t.skipped),
                ("pending", t.pending),
                ("muted", t.muted),
                ("text", t.text),
                ("label", t.label),
                ("border", t.border),
            ] {
                assert!(
                    !matches!(
                        st.fg,
                        Some(
                            Color::DarkGray | Color::Indexed(8) | Color::Black | Color::Indexed(0)
                        )
                    ),
                    "{name} {slot}: {:?}",
                    st.fg
                );
            }
            if let (Some(Color::Rgb(r, g, b)), Some(Color::Rgb(br, bg, bb))) =
                (t.skipped.fg, t.background.bg)
            {
                let luma =
                    |r: u8, g: u8, b: u8| 0.2126 * r as f64 + 0.7152 * g as f64 + 0.0722 * b as f64;
                let (fg, bgl) = (luma(r, g, b), luma(br, bg, bb));
                assert!((fg - bgl).abs() > 80.0, "{name}: skipped {fg} on {bgl}");
            }
        }
    }

    #[test]
    fn high_contrast_dims_nothing_and_sets_its_background() {
        let t = Theme::builtin("high-contrast").unwrap();
        assert_eq!(t.background.bg, Some(Color::Rgb(0, 0, 0)));
        for st in [t.skipped, t.pending, t.muted, t.border, t.text] {
            assert!(!st.add_modifier.contains(Modifier::DIM), "{st:?}");
            let Some(Color::Rgb(r, g, b)) = st.fg else {
                panic!("exact colours: {st:?}")
            };
            assert!(r.min(g).min(b) >= 0xd0, "near-white on black: {st:?}");
        }
    }

    #[test]
    fn a_user_theme_overrides_only_the_slots_it_sets() {
        let u = Overrides::parse(
            r##"{"fail": {"fg": "#ff0000", "underline": true}, "muted": {"fg": "245"}}"##,
            "/home/me/my-theme.json",
        )
        .unwrap();
        assert_eq!(u.name, "my-theme", "named after the file");
        let base = Theme::builtin("light").unwrap();
        let t = u.over(&base);
        assert_eq!(t.fail.fg, Some(Color::Rgb(255, 0, 0)));
        assert!(t.fail.add_modifier.contains(Modifier::UNDERLINED));
        assert!(
            !t.fail.add_modifier.contains(Modifier::BOLD),
            "the slot is replaced whole"
        );
        assert_eq!(t.muted.fg, Some(Color::Indexed(245)));
        // Everything else is the base's.
        assert_eq!(t.pass, base.pass);
        assert_eq!(t.background, base.background);
        assert_eq!(t.selection, base.selection);
        let c = cycle_with("light", Some(&u), false);
        assert_eq!(c[0].name, "my-theme");
        assert_eq!(c.len(), BUILTIN.len() + 1);
        assert_eq!(cycle_with("light", Some(&u), true)[0].name, "mono");
        let named = Overrides::parse(r#"{"name": "room 4", "pass": {"bold": true}}"#, "x.json");
        assert_eq!(named.unwrap().name, "room 4");
    }

    #[test]
    fn a_bad_user_theme_quotes_what_is_wrong_and_the_file() {
        let err = |json: &str| Overrides::parse(json, "t.json").unwrap_err();
        let e = err(r#"{"pas": {"fg": "green"}}"#);
        assert!(
            e.starts_with("t.json: ") && e.contains("unknown slot \"pas\""),
            "{e}"
        );
        let e = err(r#"{"fail": {"fg": "reddish"}}"#);
        assert!(
            e.starts_with("t.json: ") && e.contains("fail") && e.contains("\"reddish\""),
            "{e}"
        );
        let e = err(r#"{"fail": {"colour": "red"}}"#);
        assert!(
            e.contains("t.json: slot fail") && e.contains("colour"),
            "{e}"
        );
        let e = err("{\"fail\": ");
        assert!(e.starts_with("t.json: not JSON"), "{e}");
        let e = err("[]");
        assert!(e.starts_with("t.json: a theme is a JSON object"), "{e}");
        let e = Overrides::load("/nonexistent/t.json").unwrap_err();
        assert!(e.starts_with("/nonexistent/t.json: "), "{e}");
    }

    #[test]
    fn no_color_offers_only_mono() {
        let c = cycle("colorblind", true);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "mono");
        let c = cycle("light", false);
        assert_eq!(c[0].name, "light");
        assert_eq!(c.len(), BUILTIN.len());
    }
}
