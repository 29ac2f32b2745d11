// PNG line charts for run reports and sweeps (`coconut report`, `coconut sweep`).
//
// A figure is a stack of panels sharing one width; each panel has its own axes,
// a legend and optional vertical marker lines (e.g. curriculum stage boundaries).
// Rendering uses cairo; the module knows nothing about training.
#pragma once

#include <string>
#include <vector>

namespace coconut::launcher {

// One curve: points (x[i], y[i]); x and y must have the same length.
// Non-finite y values (NaN, inf) break the line instead of being drawn.
struct PlotSeries {
  std::string label;
  std::vector<double> x, y;
};

struct PlotPanel {
  std::string title, x_label, y_label;
  std::vector<PlotSeries> series;
  std::vector<double> vertical_lines;  // e.g. stage boundaries
  bool markers = false;                // draw points too
  std::vector<double> y_include;       // values the y axis must cover (e.g. 0 and 1 for accuracies)
};

// Panels stacked vertically (those with the same x_label share their x range, so
// they line up); throws coconut::Error naming the path on failure.
void write_plot_png(const std::string& path, const std::vector<PlotPanel>& panels,
                    int width = 900, int panel_height = 360);

}  // namespace coconut::launcher
