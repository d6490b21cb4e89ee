"""SER Studio: the entry script routes between pages and holds the shared data-source picker."""
from pathlib import Path

import streamlit as st

from app_shared import apply_public_options, data_source_sidebar, local_only, public_mode

st.set_page_config(page_title="SER Studio", page_icon=":material/graphic_eq:", layout="wide")

# (script, title, icon, shown in public mode, what it offers): a public demo reads no local data and trains nothing.
# The pages live in app_pages/, not pages/: Streamlit takes a pages/ folder for its legacy multipage app, and a deep
# link (/train) to a freshly started server would run that script alone under an automatic page list.
PAGES = [
    ("app_pages/explore.py", "Explore", ":material/bar_chart:", False,
     "class balance, one clip's waveform, spectrogram, pitch and energy, emotions compared."),
    ("app_pages/demo.py", "Demo", ":material/mic:", True,
     "upload, record or stream speech; every model's prediction side by side."),
    ("app_pages/train.py", "Train", ":material/model_training:", False, "K-fold runs in a background worker."),
    ("app_pages/leaderboard.py", "Leaderboard", ":material/leaderboard:", True,
     "every stored run, with confusion matrices."),
]
shown = [p for p in PAGES if p[3] or not public_mode()]


def home():
    st.title("SER Studio")
    st.markdown(
        "Speech emotion recognition under an honest protocol: load an emotional-speech corpus, explore it, "
        "compare model families with **speaker-grouped** cross-validation, and try the trained models on "
        "your own voice.\n\n"
        + "".join(f"- **{title}**: {about}\n" for _, title, _, _, about in shown) + "\n"
        "The bundled samples are 240 RAVDESS clips of four actors (CC BY-NC-SA 4.0, Livingstone & Russo 2018); "
        "the default models were trained on RAVDESS actors 01-16.")


# a public demo answers a deep link to a page it leaves out (/train) with one sentence, not the Home page
refused = [st.Page(local_only, title=title, url_path=Path(script).stem, visibility="hidden")
           for script, title, *_ in (p for p in PAGES if p not in shown)]
nav = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True)]
                    + [st.Page(script, title=title, icon=icon) for script, title, icon, _, _ in shown] + refused)
if apply_public_options():  # a public server's first run: the browser gets them with the rerun's first message
    st.rerun()  # (after st.navigation: the rerun keeps the page a deep link asked for)
data_source_sidebar()
nav.run()
