"""Images on the host side: preparing photos for the model (crop, centre, background) and contact sheets.
Needs pillow and numpy (the ``images`` extra), imported only when used."""
