import os
import sys

# the headless-browser helper lives beside the tests
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
