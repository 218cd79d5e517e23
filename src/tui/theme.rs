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

/// `NO_COLOR` set (to anything): no colour, as the text output does.
pub fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_theme_parses_and_is_named_after_its_file() {
        assert!(BUILTIN.len() >= 4);
        for (name, json) in BUILTIN {
            let t = Theme::parse(json).unwrap_or_else(|e| panic!("theme {name}: {e}"));
            assert_eq!(t.name, *name);
            assert!(!t.description.is_empty());
        }
        for n in ["default", "light", "colorblind", "mono"] {
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

    #[test]
    fn bad_colour_names_the_slot() {
        let json = BUILTIN[0].1.replace("\"green\"", "\"greenish\"");
        let err = Theme::parse(&json).unwrap_err();
        assert!(err.contains("pass") && err.contains("greenish"), "{err}");
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
