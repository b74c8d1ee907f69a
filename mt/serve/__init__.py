"""`python -m mt.serve`: translations with their alignments over HTTP, and the attention explorer page.

results   the JSON answer for one input (shared with `mt.translate --format json`)
schema    POST /translate bodies -> checked requests, or a 4xx RequestError
batcher   the bounded queue and the one worker task that decodes requests in batches
decoder   what the worker runs in its thread: one batch of requests through the Translator
app       `create_app(translator, settings)`: routes, error handlers, the static page
server    binding the socket and running uvicorn
__main__  the command line

This package imports nothing heavy at the top, so `mt.translate` can use `results` without FastAPI.
"""
