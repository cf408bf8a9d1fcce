#!/usr/bin/env python3
"""Makes the synthetic OCR test pages (Pillow, DejaVu Sans from Debian's fonts-dejavu-core):
russian.png and chinese.png (read well by the default traineddata, for page confidence),
greek.png and hebrew.png (scripts whose traineddata setup.sh does not install by default; the
sentences are docpipe's own, plain statements of fact), blank.png (a white A4 page at 300 dpi)
page-number.png (the same page with only "12" at the foot) and faint-page-number.png (that "12"
in light grey, 170 of 255, as pencil or a faded fax: no pixel below mid-grey). Hebrew is drawn left to right
(Pillow without libraqm has no bidi): enough for orientation and script detection."""
from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
# Debian's fonts-wqy-zenhei (GPL-2 with font embedding exception), for the Chinese page.
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"


def lines_page(lines, out, font_file=FONT):
    font = ImageFont.truetype(font_file, 40)
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
lines_page([
    "Москва является столицей и крупнейшим городом России.",
    "Город стоит на реке Москве в центре европейской части страны.",
    "Здесь работают правительство, парламент и многие университеты.",
    "Зимой в городе холодно, а летом бывает жарко и солнечно.",
    "Метро открылось в тысяча девятьсот тридцать пятом году.",
], "russian.png")
lines_page([
    "北京是中华人民共和国的首都，也是全国的政治中心。",
    "这座城市位于华北平原的北部，历史已有三千多年。",
    "每年都有很多游客来参观故宫、天坛和长城。",
    "冬天寒冷干燥，夏天炎热多雨，春秋两季比较短。",
    "城市的地铁网络是世界上最长的地铁系统之一。",
], "chinese.png", CJK_FONT)
a4("blank.png")
a4("page-number.png", "12")
a4("faint-page-number.png", "12", grey=170)
