import Foundation
import CairnTestSupport
import ISCSIProtocol
import NIOCore
import Testing

/// Random and garbled bytes into every parser: each either yields a PDU, asks for more bytes, or throws
/// one of its declared errors; none crashes or consumes a partial PDU.
@Suite struct ISCSIMalformedInputTests {
    static let seed = TestSeed.make()

    @Test func garbledPDUsNeverCrashTheDecoderOrTheParsers() throws {
        print("ISCSIMalformedInputTests seed: \(Self.seed) (CAIRN_SEED=\(Self.seed) replays it)")
        var random = SeededGenerator(seed: Self.seed)
        for round in 0..<2000 {
            // Half the rounds start from a valid PDU and flip bytes; the rest are noise.
            var wire: ByteBuffer
            if round % 2 == 0 {
                var pdu = ISCSIPDU(opcode: .loginRequest, data: ISCSITextParameters.encode([("InitiatorName", "iqn.a:b")]))
                pdu.flags = 0x87
                wire = pdu.encoded(headerDigest: round % 4 == 0, dataDigest: false)
                for _ in 0..<Int.random(in: 1...6, using: &random) {
                    let at = Int.random(in: 0..<wire.readableBytes, using: &random)
                    wire.setInteger(UInt8.random(in: 0...255, using: &random), at: at)
                }
            } else {
                let count = Int.random(in: 0...300, using: &random)
                wire = ByteBuffer(bytes: (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) })
            }
            var decoder = ISCSIPDUDecoder()
            decoder.headerDigest = round % 4 == 0
            decoder.dataDigest = round % 3 == 0
            while true {
                let before = wire.readableBytes
                do {
                    guard let pdu = try decoder.decode(&wire) else {
                        #expect(wire.readableBytes == before)
                        break
                    }
                    #expect(wire.readableBytes < before)
                    _ = try? ISCSITextParameters.parse(pdu.data)
                    let cdb = (32..<48).map { pdu.byte($0) }
                    _ = try? SCSICommand.parse(cdb)
                    var machine = ISCSILoginStateMachine(tsih: 1)
                    _ = machine.receive(pdu) { _ in Bool.random(using: &random) }
                } catch .dataDigestMismatch {
                    continue
                } catch {
                    break
                }
            }
        }
    }

    @Test func randomCDBsEitherDecodeOrAreRefusedWithIllegalRequest() {
        var random = SeededGenerator(seed: Self.seed ^ 0x5A5A)
        for _ in 0..<20000 {
            let cdb = (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) }
            do {
                _ = try SCSICommand.parse(cdb)
            } catch {
                #expect(error.key == SCSISense.keyIllegalRequest)
            }
        }
    }
}
