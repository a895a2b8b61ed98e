// safetensors: 8-byte little-endian header length N, N bytes of JSON, data.
// Weight files come from outside (PyTorch, numpy, hand edits), so every field
// is checked before any byte of tensor data is trusted.
#include "safetensors.h"
#include "status.h"

#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

using namespace lathe::rt;

namespace {

// 0 for a dtype we do not know the width of.
size_t safetensorsDtypeSize(llvm::StringRef dtype) {
  return llvm::StringSwitch<size_t>(dtype)
      .Cases({"F64", "I64", "U64"}, 8)
      .Cases({"F32", "I32", "U32"}, 4)
      .Cases({"F16", "BF16", "I16", "U16"}, 2)
      .Cases({"I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"}, 1)
      .Default(0);
}

} // namespace

lathe_status_t SafetensorsFile::open(const std::string &path,
                                     std::unique_ptr<SafetensorsFile> &out) {
  auto malformed = [&](const llvm::Twine &why) {
    return makeStatus(path + ": malformed safetensors header: " + why.str());
  };

  auto fileOr = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!fileOr)
    return makeStatusF("{0}: cannot read: {1}", path,
                       fileOr.getError().message());
  auto st = std::unique_ptr<SafetensorsFile>(new SafetensorsFile);
  st->path_ = path;
  st->file_ = std::move(*fileOr);
  const auto *bytes =
      reinterpret_cast<const uint8_t *>(st->file_->getBufferStart());
  uint64_t size = st->file_->getBufferSize();

  if (size < 8)
    return makeStatusF("{0}: not a safetensors file (shorter than the 8-byte "
                       "header length)",
                       path);
  uint64_t headerLen = 0;
  for (int i = 7; i >= 0; --i)
    headerLen = (headerLen << 8) | bytes[i];
  if (headerLen > size - 8)
    return malformed(llvm::formatv("header length {0} exceeds the file size "
                                   "({1} bytes)",
                                   headerLen, size));
  llvm::StringRef headerText(reinterpret_cast<const char *>(bytes + 8),
                             headerLen);
  const uint8_t *dataBase = bytes + 8 + headerLen;
  uint64_t dataSize = size - 8 - headerLen;

  llvm::Expected<llvm::json::Value> json = llvm::json::parse(headerText);
  if (!json)
    return malformed("invalid JSON: " + llvm::toString(json.takeError()));
  const llvm::json::Object *top = json->getAsObject();
  if (!top)
    return malformed("the header is not a JSON object");

  for (const auto &kv : *top) {
    std::string name = kv.first.str();
    if (name == "__metadata__")
      continue;
    auto bad = [&](const llvm::Twine &why) {
      return malformed("tensor '" + name + "' " + why);
    };
    const llvm::json::Object *t = kv.second.getAsObject();
    if (!t)
      return bad("is not a JSON object");
    std::optional<llvm::StringRef> dtype = t->getString("dtype");
    if (!dtype)
      return bad("has no \"dtype\" string");
    const llvm::json::Array *shape = t->getArray("shape");
    if (!shape)
      return bad("has no \"shape\" array");
    const llvm::json::Array *offsets = t->getArray("data_offsets");
    if (!offsets)
      return bad("has no \"data_offsets\" array");

    TensorView view;
    view.dtype = dtype->str();
    uint64_t elements = 1;
    for (const llvm::json::Value &d : *shape) {
      std::optional<int64_t> dim = d.getAsInteger();
      if (!dim || *dim < 0)
        return bad("has a shape entry that is not a non-negative integer");
      view.shape.push_back(*dim);
      // A dim this large cannot match the data section anyway.
      if (*dim != 0 && elements > (uint64_t(1) << 56) / uint64_t(*dim))
        return bad("has an impossibly large shape");
      elements *= uint64_t(*dim);
    }
    if (offsets->size() != 2)
      return bad("data_offsets must hold two integers [begin, end]");
    std::optional<int64_t> begin = (*offsets)[0].getAsInteger();
    std::optional<int64_t> end = (*offsets)[1].getAsInteger();
    if (!begin || !end || *begin < 0 || *end < 0)
      return bad("data_offsets must hold two non-negative integers");
    if (*begin > *end || uint64_t(*end) > dataSize)
      return makeStatusF("{0}: tensor '{1}' has data_offsets [{2},{3}] outside "
                         "the data section ({4} bytes)",
                         path, name, *begin, *end, dataSize);
    view.data = dataBase + *begin;
    view.bytes = uint64_t(*end - *begin);
    if (size_t width = safetensorsDtypeSize(view.dtype)) {
      if (elements * width != view.bytes)
        return makeStatusF("{0}: tensor '{1}' holds {2} bytes, but dtype {3} "
                           "and shape {4} need {5}",
                           path, name, view.bytes, view.dtype,
                           formatShape(view.shape), elements * width);
    }
    st->tensors_[name] = std::move(view);
  }
  if (const llvm::json::Value *meta = top->get("__metadata__"))
    if (!meta->getAsObject())
      return malformed("__metadata__ is not a JSON object");
  out = std::move(st);
  return nullptr;
}

const TensorView *SafetensorsFile::find(llvm::StringRef name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

lathe_status_t lathe::rt::writeSafetensors(
    const std::string &path, llvm::ArrayRef<TensorToWrite> tensors,
    const std::map<std::string, std::string> &meta) {
  llvm::json::Object header;
  uint64_t offset = 0;
  for (const TensorToWrite &t : tensors) {
    llvm::json::Array shape;
    for (int64_t d : t.shape)
      shape.push_back(d);
    header[t.name] = llvm::json::Object{
        {"dtype", t.dtype},
        {"shape", std::move(shape)},
        {"data_offsets", llvm::json::Array{int64_t(offset),
                                           int64_t(offset + t.bytes)}}};
    offset += t.bytes;
  }
  if (!meta.empty()) {
    llvm::json::Object m;
    for (const auto &kv : meta)
      m[kv.first] = kv.second;
    header["__metadata__"] = std::move(m);
  }
  std::string text;
  llvm::raw_string_ostream(text) << llvm::json::Value(std::move(header));
  // Readers that mmap the data like it 8-byte aligned; the format allows
  // trailing spaces in the header for exactly this.
  while ((8 + text.size()) % 8 != 0)
    text.push_back(' ');

  // Written to a temporary file beside `path` and renamed over it at the
  // end: a full disk or a crash never leaves a half-written file, and an
  // earlier file at `path` (a checkpoint) survives any failure.
  int fd = -1;
  llvm::SmallString<256> tmp;
  if (std::error_code ec = llvm::sys::fs::createUniqueFile(
          path + ".tmp-%%%%%%", fd, tmp))
    return makeStatusF("{0}: cannot write: {1}", path, ec.message());
  llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
  uint64_t n = text.size();
  char lenBytes[8];
  for (int i = 0; i < 8; ++i)
    lenBytes[i] = char((n >> (8 * i)) & 0xff);
  os.write(lenBytes, 8);
  os << text;
  for (const TensorToWrite &t : tensors)
    os.write(static_cast<const char *>(t.data), t.bytes);
  os.close();
  if (os.has_error()) {
    std::string msg = os.error().message();
    // raw_fd_ostream's destructor aborts on an unhandled error.
    os.clear_error();
    llvm::sys::fs::remove(tmp);
    return makeStatusF("{0}: cannot write: {1}", path, msg);
  }
  if (std::error_code ec = llvm::sys::fs::rename(tmp, path)) {
    llvm::sys::fs::remove(tmp);
    return makeStatusF("{0}: cannot write: {1}", path, ec.message());
  }
  return nullptr;
}
