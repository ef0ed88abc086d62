import app

app.start()
