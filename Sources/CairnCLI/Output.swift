import CairnAPI
import Foundation

/// Prints values as JSON (for scripts) or as aligned text tables (for people).
enum Output {
    static func json(_ value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    /// Left-aligned columns separated by two spaces, header first.
    static func table(_ header: [String], _ rows: [[String]]) {
        let widths = header.indices.map { column in
            ([header] + rows).map { $0[column].count }.max() ?? 0
        }
        for row in [header] + rows {
            let cells = row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }
            print(cells.joined(separator: "  "))
        }
    }

    /// "key: value" lines with aligned values.
    static func fields(_ pairs: [(String, String)]) {
        let width = pairs.map(\.0.count).max() ?? 0
        for (key, value) in pairs {
            print((key + ":").padding(toLength: width + 1, withPad: " ", startingAt: 0) + " " + value)
        }
    }

    static func size(_ bytes: UInt64) -> String { ByteSize.format(bytes) }
}
