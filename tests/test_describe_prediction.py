"""What the app and the CLI say about one model's probabilities: the label, or "not sure" and the candidates."""
from ser_core.inference import NOT_SURE, describe_prediction

PROBS = {"angry": 0.38, "fearful": 0.31, "happy": 0.12, "sad": 0.1, "calm": 0.09}


def test_below_the_threshold_is_not_sure_with_the_top_three():
    said = describe_prediction(PROBS, threshold=0.5)
    assert said["uncertain"] and said["answer"] == NOT_SURE
    assert said["candidates"] == [("angry", 0.38), ("fearful", 0.31), ("happy", 0.12)]
    assert said["detail"] == "angry 38%, fearful 31%, happy 12%"
    assert said["text"] == "not sure: angry 38%, fearful 31%, happy 12%"
    assert (said["label"], said["confidence"]) == ("angry", 0.38)  # the arg-max stays available


def test_a_third_candidate_only_when_it_is_likely_enough():
    said = describe_prediction({"angry": 0.45, "fearful": 0.47, "happy": 0.05, "sad": 0.03}, threshold=0.5)
    assert said["text"] == "not sure: fearful 47%, angry 45%"


def test_at_or_above_the_threshold_or_without_one_is_a_label():
    for threshold in (None, 0.38, 0.2):
        said = describe_prediction(PROBS, threshold)
        assert not said["uncertain"] and said["answer"] == "angry"
        assert said["detail"] == "38% confidence" and said["text"] == "angry 38%"
