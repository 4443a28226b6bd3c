# legitimate: a pyplot-free figure (matplotlib.figure.Figure + FigureCanvasAgg), written with canvas.print_png.
def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig = Figure(figsize=(6, 4))
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([p[1] for p in points], [p[2] for p in points], "o")
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, color="grey", linestyle="--")
    ax.set_title(title)
    canvas.print_png(str(out_path))
    return points
