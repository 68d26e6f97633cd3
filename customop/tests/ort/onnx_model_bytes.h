// A one-node ONNX model (SwitchableAttention) serialized by hand in protobuf wire format, so that
// the in-ORT native tests need no protobuf library. Field numbers from onnx.proto: ModelProto
// ir_version 1, graph 7, opset_import 8; GraphProto node 1, name 2, input 11, output 12;
// NodeProto input 1, output 2, op_type 4, attribute 5, domain 7; AttributeProto name 1, f 2, i 3,
// type 20 (FLOAT 1, INT 2); ValueInfoProto name 1, type 2; TypeProto tensor_type 1; Tensor
// elem_type 1, shape 2; TensorShapeProto dim 1; Dimension dim_value 1, dim_param 2;
// OperatorSetIdProto domain 1, version 2.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace infllmv2::ort_tests {

class Proto {
 public:
  Proto& Varint(int field, uint64_t v) {
    Key(field, 0);
    Raw(v);
    return *this;
  }
  Proto& Bytes(int field, const std::string& s) {
    Key(field, 2);
    Raw(s.size());
    out_ += s;
    return *this;
  }
  Proto& Message(int field, const Proto& m) { return Bytes(field, m.out_); }
  Proto& Float(int field, float f) {
    Key(field, 5);
    char b[4];
    std::memcpy(b, &f, 4);
    out_.append(b, 4);
    return *this;
  }
  const std::string& str() const { return out_; }

 private:
  void Key(int field, int wire) { Raw((static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire)); }
  void Raw(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  std::string out_;
};

// ONNX element types used here.
constexpr int kFloat = 1, kInt32 = 6, kFloat16 = 10;

struct GraphValue {
  std::string name;  // "" = omitted optional input/output
  int elem_type = kFloat;
  int rank = 0;  // every dim symbolic
};

// A one-node model: `op_type` of `domain` (opset 1; ONNX opset 17) over `inputs` -> `outputs`, with
// int and float attributes, every dim symbolic; an empty name is an omitted optional input or output.
inline std::string OneNodeModel(const char* op_type, const char* domain, const std::vector<GraphValue>& inputs,
                                const std::vector<GraphValue>& outputs,
                                const std::vector<std::pair<std::string, int64_t>>& int_attrs,
                                const std::vector<std::pair<std::string, float>>& float_attrs = {}) {
  auto value_info = [](const GraphValue& v) {
    Proto shape;
    for (int d = 0; d < v.rank; ++d) shape.Message(1, Proto().Bytes(2, v.name + "_d" + std::to_string(d)));
    Proto tensor;
    tensor.Varint(1, static_cast<uint64_t>(v.elem_type)).Message(2, shape);
    return Proto().Bytes(1, v.name).Message(2, Proto().Message(1, tensor));
  };
  Proto node;
  for (const auto& v : inputs) node.Bytes(1, v.name);
  for (const auto& v : outputs) node.Bytes(2, v.name);
  node.Bytes(4, op_type).Bytes(7, domain);
  for (const auto& [name, value] : int_attrs)
    node.Message(5, Proto().Bytes(1, name).Varint(3, static_cast<uint64_t>(value)).Varint(20, 2));
  for (const auto& [name, value] : float_attrs) node.Message(5, Proto().Bytes(1, name).Float(2, value).Varint(20, 1));
  Proto graph;
  graph.Message(1, node).Bytes(2, "one_node");
  for (const auto& v : inputs)
    if (!v.name.empty()) graph.Message(11, value_info(v));
  for (const auto& v : outputs)
    if (!v.name.empty()) graph.Message(12, value_info(v));
  Proto model;
  model.Varint(1, 8).Message(7, graph);
  model.Message(8, Proto().Bytes(1, "").Varint(2, 17));
  model.Message(8, Proto().Bytes(1, domain).Varint(2, 1));
  return model.str();
}

// One SwitchableAttention node over `inputs` -> `outputs`, with int and float attributes.
inline std::string SwitchableAttentionModel(const std::vector<GraphValue>& inputs,
                                            const std::vector<GraphValue>& outputs,
                                            const std::vector<std::pair<std::string, int64_t>>& int_attrs,
                                            const std::vector<std::pair<std::string, float>>& float_attrs = {}) {
  return OneNodeModel("SwitchableAttention", "com.infllmv2", inputs, outputs, int_attrs, float_attrs);
}

}  // namespace infllmv2::ort_tests
