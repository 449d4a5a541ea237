"""Text the tokenizer scripts share (make-tokenizer-fixture.py, make-checkpoints.py): the training corpus,
the strings whose ids and decodings are compared, the chat messages and the ChatML template."""

CORPUS_LINES = [
    "The quick brown fox jumps over the lazy dog. CUDA graphs replay a whole step in one launch.",
    "def forward(x):\n    return x * 2  # tabs\tand  double  spaces",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Emoji: 🙂🚀🔥 — and accents: café, naïve, Zürich, ½ ¾.",
    "Numbers 12345 67890, symbols <>{}[]()!?;:'\"",
]
# Emoji, CJK, runs of whitespace, characters no training line has (byte fallback), and the empty string.
HARD = [
    "Hello world",
    "  leading and trailing spaces  ",
    "tabs\tnew\nlines\r\nand    runs of     spaces",
    "東京は日本の首都です",
    "emoji 🙂🚀 and a family 👨‍👩‍👧",
    "a rare character never seen in training: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∮ ⅋",
]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hi 👋 in Japanese: こんにちは?"},
]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
