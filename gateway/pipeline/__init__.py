"""The request pipeline: one path for chat and completions, top to bottom in ``pipeline``.

    authenticate -> admit -> resolve model -> apply policy -> retrieve (optional)
      -> render prompt -> generate -> account

``pipeline.GenerationPipeline`` runs the steps; ``chat`` and ``completions`` supply only
what differs (``endpoint.Endpoint``: build the prompt, shape the response).
"""
