"""Switch Hugging Face libraries to offline mode before they are imported.

Import this module before anything that may import `transformers`,
`huggingface_hub` or `sentence_transformers`: those libraries read the
switches once, at import time. A user who really wants hub downloads can set
the variables to 0 before starting the process.
"""

import os

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
