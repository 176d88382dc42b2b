"""Streamlit helpers for the dashboard's pages (the pages in ``app_pages/`` hold layout only), by concern:

* :mod:`.navigation` — the page map (:data:`~.navigation.PAGES`), used by the router ``app.py`` and the home page;
* :mod:`.controls` — shared controls kept across pages and mirrored in the URL query, so a view is shared by its link;
* :mod:`.widgets` — sidebar widgets generated from declared parameters (:class:`tatr_core.merge.registry.Param`);
* :mod:`.session` — the zoo in use (zoo box, ``?zoo=``, else the run options' default) and its evaluator,
  loaded once per process; the sidebar's precision control (the run options of the page and its jobs);
* :mod:`.errors` — errors shown as a message with the fix, details in an expander, never a traceback;
* :mod:`.jobs` — analyses run as background jobs keyed by their spec (:class:`tatr_core.keys.Spec`), with
  progress, a time estimate and partial results;
* :mod:`.downloads` — figures drawn on screen exactly as they export, with their Download menu.
"""
