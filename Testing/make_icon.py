"""Draw the module icon, MonaiDeployer/Resources/Icons/MonaiDeployer.png (128x128 RGBA).

A stylised axial slice of a head with a segmented region outlined in colour, on a rounded
tile. Drawn at 4x and downsampled so edges are smooth. Run from anywhere:

    .venv/bin/python Testing/make_icon.py
"""

import math
import pathlib

from PIL import Image, ImageChops, ImageDraw, ImageFilter

SIZE = 128
SCALE = 4
OUT = pathlib.Path(__file__).resolve().parents[1] / "MonaiDeployer" / "Resources" / "Icons" / "MonaiDeployer.png"


def _blob(cx, cy, rx, ry, wobble, phase, points=180, folds=(3, 5)):
    """A closed, irregular ellipse as a polygon: organ-like with few folds, cortex-like with many."""
    pts = []
    for i in range(points):
        t = 2 * math.pi * i / points
        r = 1 + wobble * (0.6 * math.sin(folds[0] * t + phase) + 0.4 * math.sin(folds[1] * t + 2 * phase))
        pts.append((cx + rx * r * math.cos(t), cy + ry * r * math.sin(t)))
    return pts


def draw() -> Image.Image:
    s = SIZE * SCALE
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)

    # Tile: dark slate with a subtle border, like a viewer's slice background.
    d.rounded_rectangle((4, 4, s - 5, s - 5), radius=26 * SCALE, fill=(24, 32, 44, 255),
                        outline=(70, 90, 115, 255), width=3 * SCALE)

    # Head: skull ring and brain tissue, grey levels as in a CT/MR slice.
    cx, cy = s * 0.5, s * 0.52
    d.ellipse((cx - 190, cy - 222, cx + 190, cy + 222), fill=(200, 200, 200, 255))
    d.ellipse((cx - 170, cy - 202, cx + 170, cy + 202), fill=(118, 118, 122, 255))

    # Gyri: darker sulci drawn as wavy lines inside the brain, clipped to it.
    sulci = Image.new("L", (s, s), 0)
    sd = ImageDraw.Draw(sulci)
    for k, (ry, rx) in enumerate(((158, 128), (112, 86))):
        poly = _blob(cx, cy, rx, ry, 0.09, k * 1.3, points=360, folds=(17, 23))
        sd.line(poly + poly[:1], fill=255, width=7)
    sd.line((cx, cy - 200, cx, cy + 200), fill=255, width=9)  # midline
    brain = Image.new("L", (s, s), 0)
    ImageDraw.Draw(brain).ellipse((cx - 166, cy - 198, cx + 166, cy + 198), fill=255)
    sulci = ImageChops.multiply(sulci, brain).filter(ImageFilter.GaussianBlur(2))
    img.paste((78, 78, 84, 255), (0, 0), sulci)

    # Segmented structure: translucent fill plus a bright outline (labelmap overlay look).
    region = _blob(cx + 58, cy - 34, 62, 74, 0.12, 0.7)
    overlay = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    ImageDraw.Draw(overlay).polygon(region, fill=(255, 150, 40, 110))
    img.alpha_composite(overlay)
    d.line(region + region[:1], fill=(255, 170, 50, 255), width=9, joint="curve")

    # A second, smaller structure in another label colour.
    region2 = _blob(cx - 70, cy + 70, 40, 34, 0.1, 2.1)
    overlay = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    ImageDraw.Draw(overlay).polygon(region2, fill=(60, 200, 120, 110))
    img.alpha_composite(overlay)
    d.line(region2 + region2[:1], fill=(80, 230, 140, 255), width=8, joint="curve")

    # "Run" badge bottom right: the model being deployed.
    bx, by, br = s - 118, s - 118, 84
    d.ellipse((bx - br, by - br, bx + br, by + br), fill=(28, 120, 220, 255),
              outline=(235, 245, 255, 255), width=8)
    d.polygon([(bx - 26, by - 42), (bx - 26, by + 42), (bx + 44, by)], fill=(255, 255, 255, 255))

    return img.resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    draw().save(OUT, optimize=True)
    print(OUT)


if __name__ == "__main__":
    main()
