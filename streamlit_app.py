"""SER Studio: the entry script routes between pages and holds the shared data-source picker."""
import streamlit as st

from app_shared import data_source_sidebar

st.set_page_config(page_title="SER Studio", page_icon=":material/graphic_eq:", layout="wide")


def home():
    st.title("SER Studio")
    st.markdown(
        "Speech emotion recognition under an honest protocol: load an emotional-speech corpus, explore it, "
        "compare model families with **speaker-grouped** cross-validation, and try the trained models on "
        "your own voice.\n\n"
        "- **Explore**: class balance, one clip's waveform, spectrogram, pitch and energy, emotions compared.\n"
        "- **Demo**: upload, record or stream speech; every model's prediction side by side.\n"
        "- **Train**: K-fold runs in a background worker.\n"
        "- **Leaderboard**: every stored run, with confusion matrices.\n\n"
        "The bundled samples are 16 RAVDESS clips (CC BY-NC-SA 4.0, Livingstone & Russo 2018); "
        "the default models were trained on RAVDESS actors 01-16.")


pages = [
    st.Page(home, title="Home", icon=":material/home:", default=True),
    st.Page("pages/explore.py", title="Explore", icon=":material/bar_chart:"),
    st.Page("pages/demo.py", title="Demo", icon=":material/mic:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/leaderboard.py", title="Leaderboard", icon=":material/leaderboard:"),
]
nav = st.navigation(pages)
data_source_sidebar()
nav.run()
