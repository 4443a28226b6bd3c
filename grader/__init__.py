"""The HW2 autograder and the instructor tools (reference export, Gradescope packaging, batch grading)."""
