"""`convnet explore`: a local web app to see inside a trained CNN (its layer graph, feature maps, filters,
explanations, receptive fields, the run's curves and mistakes, the seed's kernel playground).

`Explorer` (session.py) holds the model and answers the JSON API as dicts, `create_app` (app.py) makes the ASGI
app (Starlette) that serves them with the page (static/), `serve` (server.py) runs it with uvicorn. The web
server's packages are the `explore` extra: `pip install 'convnet[explore]'`; `import convnet` does not import
this package.
"""
from convnet.explorer.app import create_app
from convnet.explorer.server import serve
from convnet.explorer.session import Explorer, NotFound, load_explorer

__all__ = ["Explorer", "NotFound", "load_explorer", "create_app", "serve"]
