"""The Streamlit UI of the ASR service (`make ui`); it talks to the ingress over HTTP only."""
