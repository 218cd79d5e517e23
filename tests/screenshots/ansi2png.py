#!/usr/bin/env python3
"""Render a terminal capture with ANSI colours (tmux capture-pane -e -p)
to a PNG, one monospace cell per character.

    tmux capture-pane -e -p -t SESSION > screen.ans
    python3 tests/screenshots/ansi2png.py screen.ans screen.png [--cols 120 --rows 36]

Needs Pillow (pip install pillow) and the DejaVu fonts (Debian: fonts-dejavu-core).
Handles SGR reset, bold, dim, italic, underline, reverse, the 16 ANSI colours,
the 256-colour palette and 24-bit colour. Box-drawing lines are drawn as
lines so that borders join up between cells.
"""

import argparse
import re
import sys

from PIL import Image, ImageDraw, ImageFont

FONT_DIR = "/usr/share/fonts/truetype/dejavu/"
DEFAULT_FG = (208, 208, 208)
DEFAULT_BG = (24, 26, 31)

# xterm's default 16 colours.
ANSI16 = [
    (0, 0, 0), (205, 49, 49), (13, 188, 121), (229, 229, 16),
    (36, 114, 200), (188, 63, 188), (17, 168, 205), (229, 229, 229),
    (118, 118, 118), (241, 76, 76), (35, 209, 139), (245, 245, 67),
    (59, 142, 234), (214, 112, 214), (41, 184, 219), (255, 255, 255),
]


def xterm256(n):
    if n < 16:
        return ANSI16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    v = 8 + (n - 232) * 10
    return (v, v, v)


class Pen:
    def __init__(self):
        self.reset()

    def reset(self):
        self.fg = None
        self.bg = None
        self.bold = self.dim = self.italic = self.underline = self.reverse = False

    def copy(self):
        p = Pen()
        p.__dict__.update(self.__dict__)
        return p


def apply_sgr(pen, params):
    ps = [int(p) if p else 0 for p in params.split(";")] if params else [0]
    i = 0
    while i < len(ps):
        p = ps[i]
        if p == 0:
            pen.reset()
        elif p == 1:
            pen.bold = True
        elif p == 2:
            pen.dim = True
        elif p == 3:
            pen.italic = True
        elif p == 4:
            pen.underline = True
        elif p == 7:
            pen.reverse = True
        elif p == 22:
            pen.bold = pen.dim = False
        elif p == 23:
            pen.italic = False
        elif p == 24:
            pen.underline = False
        elif p == 27:
            pen.reverse = False
        elif 30 <= p <= 37:
            pen.fg = ANSI16[p - 30]
        elif 90 <= p <= 97:
            pen.fg = ANSI16[p - 90 + 8]
        elif 40 <= p <= 47:
            pen.bg = ANSI16[p - 40]
        elif 100 <= p <= 107:
            pen.bg = ANSI16[p - 100 + 8]
        elif p == 39:
            pen.fg = None
        elif p == 49:
            pen.bg = None
        elif p in (38, 48) and i + 1 < len(ps):
            if ps[i + 1] == 5 and i + 2 < len(ps):
                c = xterm256(ps[i + 2])
                i += 2
            elif ps[i + 1] == 2 and i + 4 < len(ps):
                c = (ps[i + 2], ps[i + 3], ps[i + 4])
                i += 4
            else:
                c = None
            if p == 38:
                pen.fg = c
            else:
                pen.bg = c
        i += 1


SEQ = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])|\x1b[()][A-Za-z0-9]|\x1b.")


def parse(text, cols, rows):
    grid = []
    pen = Pen()
    for line in text.split("\n")[:rows]:
        row = []
        pos = 0
        styled_tail = False
        for m in SEQ.finditer(line):
            for ch in line[pos:m.start()]:
                row.append((ch, pen.copy()))
                styled_tail = False
            if m.group(2) == "m":
                apply_sgr(pen, m.group(1))
                styled_tail = True
            pos = m.end()
        for ch in line[pos:]:
            row.append((ch, pen.copy()))
            styled_tail = False
        row = row[:cols]
        # tmux trims trailing blanks. It ends a line with the SGR of those
        # blanks when they are styled (a theme's background); otherwise they
        # are plain, whatever the last character's style was.
        tail = pen.copy() if styled_tail else Pen()
        while len(row) < cols:
            row.append((" ", tail))
        grid.append(row)
    while len(grid) < rows:
        grid.append([(" ", Pen()) for _ in range(cols)])
    return grid


# Box drawing: (left, right, up, down) weights; 1 light, 2 heavy, 3 double.
BOX = {
    "─": (1, 1, 0, 0), "│": (0, 0, 1, 1), "┌": (0, 1, 0, 1), "┐": (1, 0, 0, 1),
    "└": (0, 1, 1, 0), "┘": (1, 0, 1, 0), "├": (0, 1, 1, 1), "┤": (1, 0, 1, 1),
    "┬": (1, 1, 0, 1), "┴": (1, 1, 1, 0), "┼": (1, 1, 1, 1),
    "━": (2, 2, 0, 0), "┃": (0, 0, 2, 2), "┏": (0, 2, 0, 2), "┓": (2, 0, 0, 2),
    "┗": (0, 2, 2, 0), "┛": (2, 0, 2, 0),
    "╭": (0, 1, 0, 1), "╮": (1, 0, 0, 1), "╰": (0, 1, 1, 0), "╯": (1, 0, 1, 0),
    "║": (0, 0, 3, 3), "═": (3, 3, 0, 0),
}


def draw_box(d, x, y, w, h, ch, color):
    left, right, up, down = BOX[ch]
    cx, cy = x + w // 2, y + h // 2

    def seg(x0, y0, x1, y1, weight, horizontal):
        if weight == 0:
            return
        t = 1 if weight == 1 else 2
        if weight == 3:
            off = 2
            if horizontal:
                d.rectangle([x0, y0 - off, x1, y0 - off], fill=color)
                d.rectangle([x0, y0 + off, x1, y0 + off], fill=color)
            else:
                d.rectangle([x0 - off, y0, x0 - off, y1], fill=color)
                d.rectangle([x0 + off, y0, x0 + off, y1], fill=color)
            return
        if horizontal:
            d.rectangle([x0, y0 - (t - 1) // 2, x1, y0 + t // 2], fill=color)
        else:
            d.rectangle([x0 - (t - 1) // 2, y0, x0 + t // 2, y1], fill=color)

    seg(x, cy, cx, cy, left, True)
    seg(cx, cy, x + w - 1, cy, right, True)
    seg(cx, y, cx, cy, up, False)
    seg(cx, cy, cx, y + h - 1, down, False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--cols", type=int, default=120)
    ap.add_argument("--rows", type=int, default=36)
    ap.add_argument("--size", type=int, default=15)
    ap.add_argument("--bg", default=None, help="default background as r,g,b")
    ap.add_argument("--fg", default=None, help="default foreground as r,g,b")
    a = ap.parse_args()
    default_bg = tuple(int(v) for v in a.bg.split(",")) if a.bg else DEFAULT_BG
    default_fg = tuple(int(v) for v in a.fg.split(",")) if a.fg else DEFAULT_FG

    fonts = {
        (False, False): ImageFont.truetype(FONT_DIR + "DejaVuSansMono.ttf", a.size),
        (True, False): ImageFont.truetype(FONT_DIR + "DejaVuSansMono-Bold.ttf", a.size),
        (False, True): ImageFont.truetype(FONT_DIR + "DejaVuSansMono-Oblique.ttf", a.size),
        (True, True): ImageFont.truetype(FONT_DIR + "DejaVuSansMono-BoldOblique.ttf", a.size),
    }
    # DejaVu Sans Mono has no braille (the spinner): fall back to DejaVu Sans.
    fallback = ImageFont.truetype(FONT_DIR + "DejaVuSans.ttf", a.size)
    cw = round(fonts[(False, False)].getlength("M"))
    ascent, descent = fonts[(False, False)].getmetrics()
    ch_h = ascent + descent + 2

    with open(a.input, encoding="utf-8", errors="replace") as f:
        grid = parse(f.read(), a.cols, a.rows)

    # The margin takes the most common background (a light theme paints its own).
    counts = {}
    for row in grid:
        for _, pen in row:
            bg = (pen.fg or default_fg) if pen.reverse else (pen.bg or default_bg)
            counts[bg] = counts.get(bg, 0) + 1
    margin = max(counts, key=counts.get) if counts else default_bg
    pad = 12
    img = Image.new("RGB", (a.cols * cw + 2 * pad, a.rows * ch_h + 2 * pad), margin)
    d = ImageDraw.Draw(img)
    for r, row in enumerate(grid):
        for c, (ch, pen) in enumerate(row):
            fg = pen.fg or default_fg
            bg = pen.bg or default_bg
            if pen.reverse:
                fg, bg = bg, fg
            if pen.dim:
                fg = tuple((f + b) // 2 for f, b in zip(fg, bg))
            x, y = pad + c * cw, pad + r * ch_h
            if bg != margin:
                d.rectangle([x, y, x + cw - 1, y + ch_h - 1], fill=bg)
            if ch in BOX:
                draw_box(d, x, y, cw, ch_h, ch, fg)
            elif ch == "█":
                d.rectangle([x, y, x + cw - 1, y + ch_h - 1], fill=fg)
            elif ch != " ":
                font = fallback if 0x2800 <= ord(ch) <= 0x28FF else fonts[(pen.bold, pen.italic)]
                d.text((x, y + 1), ch, font=font, fill=fg)
            if pen.underline:
                d.line([x, y + ascent + 2, x + cw - 1, y + ascent + 2], fill=fg)
    img.save(a.output)


if __name__ == "__main__":
    sys.exit(main())
