#!/usr/bin/env python3
"""Makes the synthetic OCR test pages (Pillow, DejaVu Sans from Debian's fonts-dejavu-core):
greek.png and hebrew.png (scripts whose traineddata setup.sh does not install by default; the
sentences are docpipe's own, plain statements of fact), blank.png (a white A4 page at 300 dpi)
page-number.png (the same page with only "12" at the foot) and faint-page-number.png (that "12"
in light grey, 170 of 255, as pencil or a faded fax: no pixel below mid-grey). Hebrew is drawn left to right
(Pillow without libraqm has no bidi): enough for orientation and script detection."""
from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def lines_page(lines, out):
    font = ImageFont.truetype(FONT, 40)
    img = Image.new("L", (1700, 700), 255)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((100, 100 + i * 70), line, font=font, fill=0)
    img.save(out, dpi=(300, 300), optimize=True)


def a4(out, text=None, grey=None):
    img = Image.new("1", (2480, 3508), 1) if grey is None else Image.new("L", (2480, 3508), 255)
    if text:
        ImageDraw.Draw(img).text((1200, 3300), text, font=ImageFont.truetype(FONT, 50), fill=0 if grey is None else grey)
    img.save(out, dpi=(300, 300), optimize=True)


lines_page([
    "Η Ελλάδα είναι χώρα της νοτιοανατολικής Ευρώπης.",
    "Η πρωτεύουσα και μεγαλύτερη πόλη είναι η Αθήνα.",
    "Οι κάτοικοι μιλούν ελληνικά εδώ και χιλιάδες χρόνια.",
    "Το κλίμα είναι ήπιο με ζεστά και ξηρά καλοκαίρια.",
    "Η χώρα έχει πολλά νησιά στο Αιγαίο και στο Ιόνιο.",
], "greek.png")
lines_page([
    "ירושלים היא עיר הבירה של מדינת ישראל.",
    "העיר נמצאת בהרי יהודה בין הים התיכון לים המלח.",
    "בעיר חיים כמעט מיליון תושבים מכל הדתות.",
    "העיר העתיקה מוקפת חומה מימי הסולטן.",
], "hebrew.png")
a4("blank.png")
a4("page-number.png", "12")
a4("faint-page-number.png", "12", grey=170)
