"""``qa`` (a generated extractive QA task) and ``squad`` (SQuAD JSON files): span prediction."""
