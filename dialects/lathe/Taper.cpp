//===- Taper.cpp - tapered MLP widths ----------------------------*- C++ -*-===//
#include "lathe/Taper.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>

using namespace mlir::lathe;

static std::string show(llvm::ArrayRef<int64_t> widths) {
  std::string s;
  for (int64_t w : widths)
    s += (s.empty() ? "" : ", ") + std::to_string(w);
  return s;
}

TaperResult mlir::lathe::computeTaperWidths(llvm::StringRef schedule,
                                            double max, double min,
                                            int64_t multiple, int64_t base,
                                            int64_t layers) {
  TaperResult r;
  auto fail = [&](llvm::StringRef key, std::string message) {
    r.errorKey = key.str();
    r.error = std::move(message);
    return r;
  };
  if (schedule != "cosine" && schedule != "linear" && schedule != "sigmoid")
    return fail("mlp.taper.schedule",
                "unknown schedule '" + schedule.str() +
                    "' (expected: cosine, linear, sigmoid)");
  if (layers < 2)
    return fail("mlp.taper", "a taper needs at least 2 layers");
  if (!(min > 0.0) || !(max >= min))
    return fail("mlp.taper",
                llvm::formatv("needs max >= min > 0 (front-heavy), got max "
                              "{0}, min {1}",
                              max, min)
                    .str());
  if (multiple <= 0 || (layers * base) % multiple != 0)
    return fail("mlp.taper.multiple",
                llvm::formatv("layers * width = {0} is not a multiple of {1}, "
                              "so no rounding keeps the budget",
                              layers * base, multiple)
                    .str());
  auto sig = [](double z) { return 1.0 / (1.0 + std::exp(-z)); };
  llvm::SmallVector<double> profile;
  double total = 0;
  for (int64_t l = 0; l < layers; ++l) {
    double u = double(l) / double(layers - 1), s;
    if (schedule == "cosine")
      s = min + (max - min) * 0.5 * (1.0 + std::cos(M_PI * u));
    else if (schedule == "linear")
      s = max + (min - max) * u;
    else
      s = min + (max - min) * (sig(10.0 * (0.5 - u)) - sig(-5.0)) /
                  (sig(5.0) - sig(-5.0));
    profile.push_back(s);
    total += s;
  }
  // Remainders that are equal on paper may differ by float noise; they are
  // compared at a resolution of 1e-6 multiples so that such ties go to the
  // earlier layer, as the rule says.
  llvm::SmallVector<std::pair<int64_t, int64_t>> remainders;
  int64_t floors = 0;
  r.widths.assign(layers, 0);
  for (int64_t l = 0; l < layers; ++l) {
    double w = double(base) * double(layers) * profile[l] / total;
    r.widths[l] = multiple * int64_t(std::floor(w / double(multiple)));
    floors += r.widths[l];
    remainders.push_back(
        {std::llround((w - double(r.widths[l])) / double(multiple) * 1e6), l});
  }
  llvm::sort(remainders, [](auto a, auto b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  for (int64_t k = (layers * base - floors) / multiple, i = 0; i < k; ++i)
    r.widths[remainders[i].second] += multiple;
  for (int64_t l = 0; l < layers; ++l) {
    if (r.widths[l] <= 0)
      return fail("mlp.taper",
                  llvm::formatv("layer {0} would have no MLP: widths {1}", l,
                                show(r.widths))
                      .str());
    if (l > 0 && r.widths[l] > r.widths[l - 1])
      return fail("mlp.taper", "rounding gives widths that grow with depth: " +
                                   show(r.widths));
  }
  return r;
}
