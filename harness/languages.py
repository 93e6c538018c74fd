"""Language codes used across polymoo (ISO 639-1 where one exists) and their names in the offline sources."""

from __future__ import annotations

# ISO code -> folder name in the chatterbot-corpus package.
CHATTERBOT_DIRS: dict[str, str] = {
    "bn": "bengali", "zh": "chinese", "nl": "dutch", "en": "english", "fr": "french", "de": "german",
    "he": "hebrew", "hi": "hindi", "hi-latn": "hinglish", "id": "indonesian", "it": "italian", "ja": "japanese",
    "ko": "korean", "mr": "marathi", "or": "oriya", "fa": "persian", "pt": "portuguese", "ru": "russian",
    "es": "spanish", "sv": "swedish", "ta": "tamil", "te": "telugu", "th": "thai", "zh-hant": "traditionalchinese",
    "tr": "turkish", "uk": "ukrainian", "ur": "urdu", "yo": "yoruba",
}

# CLDR locale for each code (babel); most are the code itself.
CLDR_LOCALES: dict[str, str] = {code: code for code in CHATTERBOT_DIRS} | {
    "hi-latn": "hi", "zh-hant": "zh_Hant", "zh": "zh_Hans",
}

ENGLISH_NAMES: dict[str, str] = {
    "bn": "Bengali", "zh": "Chinese", "nl": "Dutch", "en": "English", "fr": "French", "de": "German",
    "he": "Hebrew", "hi": "Hindi", "hi-latn": "Hinglish", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "ko": "Korean", "mr": "Marathi", "or": "Odia", "fa": "Persian", "pt": "Portuguese", "ru": "Russian",
    "es": "Spanish", "sv": "Swedish", "ta": "Tamil", "te": "Telugu", "th": "Thai", "zh-hant": "Traditional Chinese",
    "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "yo": "Yoruba",
    # languages that only full-scale hub data / lm-eval tasks cover
    "sw": "Swahili", "ar": "Arabic", "vi": "Vietnamese", "et": "Estonian", "ht": "Haitian Creole", "qu": "Quechua",
    "ta-in": "Tamil", "my": "Burmese", "eu": "Basque", "te-in": "Telugu", "pl": "Polish", "cs": "Czech",
}

KNOWN_LANGUAGES: frozenset[str] = frozenset(ENGLISH_NAMES)
OFFLINE_LANGUAGES: frozenset[str] = frozenset(CHATTERBOT_DIRS)
