import os
import sys

# the synthetic token source and the subprocess worker live beside the tests
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
