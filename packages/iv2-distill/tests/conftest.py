import sys
from pathlib import Path

# helper modules beside the tests (``_distill_*.py``) are imported by name
sys.path.insert(0, str(Path(__file__).parent))
