# Board entry point: load the board profile, start the meter. Kept thin on purpose.
from meter import app

app.main("/board.json")
